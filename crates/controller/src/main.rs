use clap::Parser;

#[tokio::main]
async fn main() {
    let args = svdm_controller::Args::parse();
    env_logger::Builder::new()
        .parse_filters(&log_filter(&args.log_level))
        .format_timestamp_millis()
        .init();
    if let Err(e) = svdm_controller::run(args).await {
        log::error!("{e:#}");
        std::process::exit(1);
    }
}

/// A bare level (the module's `logLevel`) applies to the module's own crates only: the HTTP and
/// Kubernetes client libraries stay at warn, so `debug` shows reconcile decisions, not connection
/// pool chatter or request details. A full env_logger filter (with `=` or `,`) is used as given.
fn log_filter(level: &str) -> String {
    if level.contains('=') || level.contains(',') {
        level.to_string()
    } else {
        format!("warn,svdm_controller={level},svdm_api={level}")
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn bare_levels_stay_in_the_module() {
        assert_eq!(
            log_filter("debug"),
            "warn,svdm_controller=debug,svdm_api=debug"
        );
        assert_eq!(log_filter("info,kube=debug"), "info,kube=debug");
    }
}
