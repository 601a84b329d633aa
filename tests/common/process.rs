//! portier as a separate process (the real binary), with its listening addresses read from its
//! JSON log, for tests that need a process: signals, exit codes, the Kubernetes provider.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct PortierProcess {
    child: Child,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// Lines portier wrote to stdout (the access log).
    stdout: Arc<Mutex<Vec<String>>>,
}

impl PortierProcess {
    /// Starts `portier` with `args` plus ephemeral loopback addresses and JSON logs, and waits
    /// (up to 20 s) for its "portier listening" line.
    pub fn spawn(args: &[&str]) -> PortierProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portier"))
            .args(args)
            .args(["--http-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .args(["--log-format", "json", "--log-level", "info,portier=debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("portier binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stdout_pipe = child.stdout.take().expect("stdout is piped");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout_pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = logs.lock().unwrap().iter().find_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                let fields = v.get("fields")?;
                (fields.get("message")?.as_str()? == "portier listening").then(|| {
                    let addr = |k: &str| fields[k].as_str().unwrap().parse::<SocketAddr>().unwrap();
                    (addr("http_addr"), addr("https_addr"), addr("admin_addr"))
                })
            });
            if let Some((http, https, admin)) = found {
                return PortierProcess { child, http, https, admin, logs, stdout };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("portier exited with {status} before listening: {:#?}", logs.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "portier did not start: {:#?}", logs.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Lines written to stdout so far (the access log, with `--access-log`).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Log lines whose message contains `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.logs().into_iter().filter(|l| l.contains(needle)).collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (up to `within`) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "portier did not exit within {within:?} after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PortierProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
