//! Shared helpers of the `server_*` integration tests (and of the benches,
//! which include this module by path): start the real server in-process on
//! `127.0.0.1:0` with a temporary data directory, talk to it over real
//! sockets, stop it gracefully; the binary as a child process ([`child`]);
//! mounted file systems ([`mount`]); the streams tests feed ([`samples`]).

#![allow(dead_code)]

pub mod child;
pub mod mount;
pub mod samples;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use htm_stream::server::{run, ServeArgs, ServerError};
use reqwest::Method;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), ServerError>>,
}

impl TestServer {
    /// Start a server on `dir` with extra flags; wait until it is ready.
    pub async fn start(dir: &Path, extra: &[&str]) -> TestServer {
        let server = Self::start_unready(dir, extra).await;
        server.wait_ready().await;
        server
    }

    /// Start without waiting for readiness.
    pub async fn start_unready(dir: &Path, extra: &[&str]) -> TestServer {
        let mut argv = vec![
            "serve".to_string(),
            "--data-dir".into(),
            dir.display().to_string(),
        ];
        if !extra.contains(&"--checkpoint-interval-secs") {
            argv.extend(["--checkpoint-interval-secs".into(), "0".into()]);
        }
        argv.extend(extra.iter().map(|s| s.to_string()));
        let args = ServeArgs::try_parse_from(argv).expect("valid flags");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(run(args, listener, async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
            handle,
        }
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("server did not become ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Trigger graceful shutdown and wait for `run` to return.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.handle)
            .await
            .expect("server stops within 20 s")
            .expect("server task did not panic")
    }

    /// Send `method path` with a JSON body (none if `body` is `None`);
    /// returns (status, parsed body, `Null` if none).
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST a JSON body to a stream; returns (status, parsed body).
    pub async fn post(&self, stream: &str, body: &Value) -> (u16, Value) {
        self.send(Method::POST, &format!("/streams/{stream}"), Some(body))
            .await
    }

    pub async fn put(&self, stream: &str, body: &Value) -> (u16, Value) {
        self.send(Method::PUT, &format!("/streams/{stream}"), Some(body))
            .await
    }

    pub async fn reset(&self, stream: &str) -> (u16, Value) {
        self.send(Method::POST, &format!("/streams/{stream}/reset"), None)
            .await
    }

    pub async fn delete(&self, stream: &str) -> (u16, Value) {
        self.send(Method::DELETE, &format!("/streams/{stream}"), None)
            .await
    }

    /// `POST /checkpoint`; returns (status, parsed body).
    pub async fn checkpoint(&self) -> (u16, Value) {
        self.send(Method::POST, "/checkpoint", None).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(Method::GET, path, None).await
    }

    pub async fn metrics(&self) -> String {
        self.metrics_via(&self.client).await
    }

    /// `/metrics` over `client`'s connections (e.g. a fresh client, when
    /// the test client's pooled connection may have been closed as idle).
    pub async fn metrics_via(&self, client: &reqwest::Client) -> String {
        client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// An hourly timestamp `h` hours after 2026-11-27T00:00:00Z.
pub fn hour(h: u64) -> String {
    samples::utc_text(samples::t0() + chrono::Duration::hours(h as i64))
}

/// A daily sine wave sample at hour `h`, exact in decimal
/// ([`samples::sample`]).
pub fn sine(h: u64) -> Value {
    samples::wire(&samples::sample(h, 0.0))
}

/// Assert the JSON error shape and code.
pub fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "body: {body}");
    assert_eq!(body["error"]["code"], want_code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "body: {body}"
    );
}
