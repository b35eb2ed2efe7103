//! Prints the DataExport CRD as YAML; `make crds` writes it to `crds/dataexports.yaml`.

fn main() -> Result<(), serde_yaml::Error> {
    print!("{}", svdm_api::crd_yaml()?);
    Ok(())
}
