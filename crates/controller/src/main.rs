use clap::Parser;

#[tokio::main]
async fn main() {
    let args = svdm_controller::Args::parse();
    env_logger::Builder::new()
        .parse_filters(&args.log_level)
        .format_timestamp_millis()
        .init();
    if let Err(e) = svdm_controller::run(args).await {
        log::error!("{e:#}");
        std::process::exit(1);
    }
}
