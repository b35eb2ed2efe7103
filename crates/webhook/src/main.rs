use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = svdm_webhook::config::Args::parse();
    env_logger::Builder::new()
        .filter_level(args.log_level)
        .format_timestamp_millis()
        .init();
    match svdm_webhook::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
