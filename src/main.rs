use clap::Parser;
use tracing_subscriber::EnvFilter;

use portier::cli::{Cli, LogFormat};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // kube_client logs every failed retry (portier logs each outage once, with its cause), and
    // rustls warns for every client that sends an IP address as SNI.
    let level = if cli.log_level.contains("kube") {
        cli.log_level.clone()
    } else {
        format!("{},kube_client=off,rustls=error", cli.log_level)
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    // One worker per CPU this process may use (affinity and cgroup quota included); on one CPU
    // the current-thread scheduler avoids the work-stealing machinery altogether.
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cpus);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portier: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let running = match portier::app::start(cli).await {
            Ok(running) => running,
            Err(e) => {
                eprintln!("portier: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        wait_for_signal().await;
        tracing::info!("shutting down: no new connections, finishing open ones");
        running.shutdown().await;
        std::process::ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
