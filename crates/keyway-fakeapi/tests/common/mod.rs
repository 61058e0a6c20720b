//! A small HTTP client over hyper for talking to the fake server byte-for-byte, without
//! kube-rs in between.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use keyway_fakeapi::FakeApiServer;
use serde_json::{json, Value};

pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
}

impl Http {
    pub fn new(server: &FakeApiServer) -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: server.url(),
        }
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", "Bearer test-token");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.client
            .request(request.body(Full::new(Bytes::from(body))).unwrap())
            .await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            self.raw(method, path, headers, body),
        )
        .await
        .expect("a response within 10 s")
        .expect("the request reaches the server");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[], Vec::new()).await
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> Answer {
        self.send(
            method,
            path,
            &[("content-type", content_type)],
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.json(Method::POST, path, "application/json", body)
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        self.json(Method::PUT, path, "application/json", body).await
    }

    pub async fn patch(&self, path: &str, content_type: &str, body: &Value) -> Answer {
        self.json(Method::PATCH, path, content_type, body).await
    }

    pub async fn delete(&self, path: &str, body: Option<&Value>) -> Answer {
        let body = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        self.send(
            Method::DELETE,
            path,
            &[("content-type", "application/json")],
            body,
        )
        .await
    }

    /// Opens a watch (or any streaming GET) and returns its event stream.
    pub async fn watch(&self, path: &str) -> Watch {
        let response = self.raw(Method::GET, path, &[], Vec::new()).await.unwrap();
        Watch {
            status: response.status().as_u16(),
            body: response.into_body(),
            buffer: Vec::new(),
        }
    }

    /// The names of a list's items, in order.
    pub async fn names(&self, path: &str) -> Vec<String> {
        let answer = self.get(path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        names(&answer.body)
    }
}

pub fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

pub struct Watch {
    pub status: u16,
    body: Incoming,
    buffer: Vec<u8>,
}

/// How a watch stream ended, if it did.
#[derive(Debug, PartialEq)]
pub enum End {
    Clean,
    Cut,
}

impl Watch {
    /// The next event, `Err(End)` when the stream ends, panicking after `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Result<Value, End> {
        tokio::time::timeout(wait, self.next_event())
            .await
            .expect("a watch event in time")
    }

    /// The next event within 5 s.
    pub async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(5))
            .await
            .expect("the watch stream is still open")
    }

    /// The next event that is not a BOOKMARK.
    pub async fn next_change(&mut self) -> Value {
        loop {
            let event = self.next().await;
            if event["type"] != "BOOKMARK" {
                return event;
            }
        }
    }

    /// Whether nothing but bookmarks arrives for `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.next_event()).await {
                Err(_) => return true,
                Ok(Ok(event)) if event["type"] == "BOOKMARK" => continue,
                Ok(_) => return false,
            }
        }
    }

    async fn next_event(&mut self) -> Result<Value, End> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Ok(serde_json::from_slice(&line).expect("each line is one JSON event"));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) => return Err(End::Cut),
                None => return Err(End::Clean),
            }
        }
    }
}

pub fn secret(namespace: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "stringData": {"key": name},
    })
}

pub fn gateway(namespace: &str, name: &str, class: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"gatewayClassName": class, "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
    })
}

pub fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion is a string")
        .parse()
        .expect("resourceVersion is a number here")
}
