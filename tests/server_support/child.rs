//! The `htm-stream serve` binary as a child process (kill tests, benches
//! that measure the server's own memory): on a free loopback port, with a
//! JSON log that a thread reads to the end, so the server never blocks on a
//! full pipe.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running server binary.
pub struct ChildServer {
    /// The process.
    pub child: Child,
    /// `http://ADDR` it serves on.
    pub base: String,
    /// The log lines `spawn`'s `keep` selected, in order.
    kept: Arc<Mutex<Vec<Value>>>,
}

impl ChildServer {
    /// Start the binary with `serve --listen 127.0.0.1:0 --data-dir DIR
    /// --log-format json` and `flags`, `RUST_LOG=info`; returns once it has
    /// logged the address it serves on (not yet ready: see
    /// [`ChildServer::wait_ready`]). Log lines for which `keep` is true are
    /// kept ([`ChildServer::kept`]).
    pub fn spawn(dir: &Path, flags: &[&str], keep: fn(&Value) -> bool) -> ChildServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_htm-stream"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(["--log-format", "json"])
            .args(flags)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the htm-stream binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (addr_tx, addr_rx) = mpsc::channel::<String>();
        let kept = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&kept);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["fields"]["message"] == "serving" {
                    let addr = v["fields"]["addr"].as_str().unwrap_or_default();
                    let _ = addr_tx.send(addr.to_string());
                }
                if keep(&v) {
                    log.lock().unwrap().push(v);
                }
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server logs its address");
        ChildServer {
            child,
            base: format!("http://{addr}"),
            kept,
        }
    }

    /// Wait until `/readyz` answers 200; panics after `within`.
    pub async fn wait_ready(&self, client: &reqwest::Client, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the server did not become ready within {within:?}");
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self, client: &reqwest::Client) -> String {
        let r = client.get(format!("{}/metrics", self.base)).send().await;
        r.unwrap().text().await.unwrap()
    }

    /// The log lines kept so far.
    pub fn kept(&self) -> Vec<Value> {
        self.kept.lock().unwrap().clone()
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        self.child.kill().expect("the server can be killed");
        self.child.wait().expect("the server is reaped");
    }

    /// SIGTERM (a graceful stop: final checkpoints), and wait for the
    /// process to end.
    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
