use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = svdm_webhook::config::Args::parse();
    // Libraries log at most at info: their debug output is noise for operators, and nothing
    // below info may carry request data.
    env_logger::Builder::new()
        .filter_level(args.log_level.min(log::LevelFilter::Info))
        .filter_module("svdm_webhook", args.log_level)
        .filter_module("svdm_api", args.log_level)
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
