//! Wiring: from parsed flags to running entries, admin, and the manifest watcher.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access_log::AccessLog;
use crate::cli::Cli;
use crate::metrics::{EntryAddresses, Metrics};
use crate::provider::file::{self, ManifestSource};
use crate::provider::kube::{self as kube_provider, KubeOptions};
use crate::provider::status::{self, PublishOptions};
use crate::provider::Source;
use crate::proxy::entry::{self, CertResolver};
use crate::proxy::upstream::{UpstreamTimeouts, Upstreams};
use crate::proxy::{EntryKind, Settings, Shared};
use crate::reload::{empty_live, Reloader};
use crate::tls::{self, LoadedCert};
use crate::translate::TranslateOptions;

/// On shutdown, how long the access log may take to write the lines still queued.
pub const ACCESS_LOG_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A started portier: its bound addresses, and a handle to stop it.
pub struct Running {
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    /// The default certificate (generated or from --tls-cert).
    pub default_cert: LoadedCert,
    shutdown: watch::Sender<bool>,
    /// The entries, drained first; then the admin listener, stopped last so `/readyz` answers
    /// 503 while the entries drain.
    tasks: Vec<JoinHandle<()>>,
    admin_shutdown: watch::Sender<bool>,
    admin_task: JoinHandle<()>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Running {
    /// Stops accepting, lets open connections finish (bounded), and returns when all are done.
    pub async fn shutdown(self) {
        self.shared.ready.store(false, std::sync::atomic::Ordering::Release);
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = self.admin_shutdown.send(true);
        let _ = self.admin_task.await;
        let shared = self.shared.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            shared.access_log.as_ref().is_none_or(|log| log.flush(ACCESS_LOG_FLUSH_TIMEOUT))
        });
        if !flushed.await.unwrap_or(false) {
            tracing::warn!("the access log could not be written out before exiting");
        }
    }
}

/// Starts portier. Every error names the flag or file it comes from.
pub async fn start(cli: Cli) -> Result<Running, String> {
    let options = TranslateOptions {
        label_selector: cli.label_selector.clone().unwrap_or_default(),
        ingress_class: cli.ingress_class.clone(),
        insecure_skip_verify: cli.insecure_skip_verify,
        forbid_external_name: !cli.allow_external_name,
        allow_node_local_external_name: cli.allow_node_local_external_name,
    };
    let default_cert = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => {
            let cert_pem = std::fs::read(cert).map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
            let key_pem = std::fs::read(key).map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
            tls::load_pem_pair(&cert_pem, &key_pem)
                .map_err(|e| format!("--tls-cert {} / --tls-key {}: {e}", cert.display(), key.display()))?
        }
        _ => tls::generate_default_cert()?,
    };
    let upstreams = Upstreams::new(
        &cli.backend_ca,
        UpstreamTimeouts { connect: cli.upstream_connect_timeout, tls_handshake: cli.upstream_tls_handshake_timeout },
    )?;
    let manifests = if cli.manifests.is_empty() { None } else { Some(ManifestSource::new(cli.manifests.clone())?) };

    let bind = |flag: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|e| format!("{flag} {addr}: cannot listen: {e}"))
    };
    let http = bind("--http-addr", cli.http_addr).await?;
    let https = bind("--https-addr", cli.https_addr).await?;
    let admin = bind("--admin-addr", cli.admin_addr).await?;
    let local = |l: &TcpListener, flag: &str| l.local_addr().map_err(|e| format!("{flag}: {e}"));
    let (http_addr, https_addr, admin_addr) =
        (local(&http, "--http-addr")?, local(&https, "--https-addr")?, local(&admin, "--admin-addr")?);

    let metrics = Metrics::new();
    let access_log = match cli.access_log {
        true => Some(AccessLog::stdout(cli.access_log_format, metrics.access_log_dropped.clone())?),
        false => None,
    };
    let shared = Arc::new(Shared {
        live: ArcSwap::from_pointee(empty_live()),
        settings: Settings {
            https_redirect: !cli.no_https_redirect,
            https_port: cli.https_redirect_port.unwrap_or(https_addr.port()),
            trusted_proxies: cli.forwarded_trusted_ips.clone(),
            response_header_timeout: cli.upstream_response_timeout,
            tls_handshake_timeout: cli.tls_handshake_timeout,
            header_read_timeout: cli.header_read_timeout,
            max_connections: cli.max_connections as usize,
            idle_timeout: cli.idle_timeout,
            max_header_bytes: cli.max_header_bytes as usize,
            max_headers: cli.max_headers as usize,
            max_uri_length: cli.max_uri_length as usize,
            http2_max_concurrent_streams: cli.http2_max_concurrent_streams,
        },
        ready: Default::default(),
        metrics,
        access_log,
        entries: EntryAddresses { http: http_addr, https: https_addr, admin: admin_addr },
    });

    let (changes_tx, changes_rx) = std::sync::mpsc::channel();
    let (reloader, watcher) = match manifests {
        Some(files) => {
            let watcher = file::watch(files.roots(), changes_tx)?;
            let mut reloader = Reloader::new(Source::Files(files), options, upstreams, shared.clone());
            reloader.reload();
            (reloader, Some(watcher))
        }
        None => {
            let kube_options = KubeOptions {
                kubeconfig: cli.kubeconfig.clone(),
                context: cli.context.clone(),
                namespaces: cli.namespaces.clone(),
                label_selector: cli.label_selector.as_ref().filter(|s| !s.is_everything()).map(|s| s.to_string()),
            };
            let client = kube_provider::connect(&kube_options).await?;
            let stores = kube_provider::watch(client.clone(), &kube_options, changes_tx);
            let mut reloader = Reloader::new(Source::Kube(stores), options, upstreams, shared.clone());
            let publish = PublishOptions {
                ips: cli.publish_ip.clone(),
                hostname: cli.publish_hostname.clone(),
                service: cli.publish_service.clone(),
            };
            let (writes, to_write) = tokio::sync::mpsc::unbounded_channel();
            reloader.write_back(publish, writes);
            tokio::spawn(status::run(client, to_write));
            (reloader, None)
        }
    };
    let throttle = cli.throttle;
    std::thread::Builder::new()
        .name("portier-reload".into())
        .spawn(move || reloader.run(changes_rx, throttle))
        .map_err(|e| format!("cannot start the reload thread: {e}"))?;

    let resolver = Arc::new(CertResolver::new(shared.clone(), default_cert.key.clone()));
    let acceptor = tls::TlsEntry::new(resolver, cli.tls_min_version == crate::cli::TlsVersion::V1_3)?;
    let (shutdown, stop) = watch::channel(false);
    let (admin_shutdown, admin_stop) = watch::channel(false);
    let grace = cli.grace_period;
    let admin_task = tokio::spawn(crate::admin::serve(admin, shared.clone(), admin_stop));
    let tasks = vec![
        tokio::spawn(entry::serve(http, EntryKind::Http, None, shared.clone(), stop.clone(), grace)),
        tokio::spawn(entry::serve(https, EntryKind::Https, Some(acceptor), shared.clone(), stop, grace)),
    ];
    tracing::info!(%http_addr, %https_addr, %admin_addr, "portier listening");
    Ok(Running {
        http_addr,
        https_addr,
        admin_addr,
        shared,
        default_cert,
        shutdown,
        tasks,
        admin_shutdown,
        admin_task,
        _watcher: watcher,
    })
}
