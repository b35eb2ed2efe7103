use std::process::ExitCode;

use clap::Parser;
use svdm_exporter::config::Config;

fn main() -> ExitCode {
    let cfg = Config::parse();
    env_logger::Builder::new()
        .parse_filters(&cfg.log_level)
        .format_timestamp_millis()
        .init();
    match actix_web::rt::System::new().block_on(svdm_exporter::server::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
