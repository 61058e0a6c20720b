//! A fake Kubernetes API server for tests.
//!
//! Keyway's Kubernetes mode is a set of clients (kube-rs reflectors, status writers, leader
//! election) talking to an API server. Testing them against a real cluster is slow and
//! cannot produce the failures that matter (a watch whose history was compacted, a server
//! that stops answering, a LIST that takes its time), and testing them against mocks of
//! kube-rs tests only what we believed kube-rs does. [`FakeApiServer`] is a real HTTP server
//! on `127.0.0.1` that behaves the way the Kubernetes API conventions say an API server
//! behaves, so any client — kube-rs included, several processes at once — can be pointed
//! at it with a kubeconfig, and tests can shape its state and its faults from Rust.
//!
//! # What it serves
//!
//! Namespaces, Secrets, Services, ConfigMaps (core/v1), EndpointSlices
//! (discovery.k8s.io/v1), Leases (coordination.k8s.io/v1), Gateway API v1 GatewayClasses,
//! Gateways, HTTPRoutes and ReferenceGrants (the latter also as v1beta1, one storage behind
//! both versions like a multi-version CRD), and kgateway's v1alpha1 TrafficPolicies and
//! Backends. Paths, discovery (legacy and aggregated) and `/version` are those of a real server.
//!
//! # Conventions followed
//!
//! - **Objects**: one resourceVersion counter for everything, bumped by every write (like
//!   etcd's revision); the server sets `uid`, `creationTimestamp`, `resourceVersion` and
//!   `generation` (1 on create, +1 when anything outside `metadata`/`status` changes). A
//!   write that changes nothing writes nothing (no new revision, no event). Objects read
//!   through a version carry that `apiVersion`.
//! - **Status subresource** where the real resource has one: the main resource ignores
//!   `status`, `/status` changes only `status`, and creation drops `status`.
//! - **LIST**: `<Kind>List` sorted by namespace and name; `limit`/`continue` paging over the
//!   snapshot of the first page; label and field selectors; the `resourceVersion` /
//!   `resourceVersionMatch` semantics of the API concepts (see the `list` module); built-in
//!   resources' list items carry no `apiVersion`/`kind`, custom resources' do.
//! - **WATCH**: newline-delimited JSON events, ADDED/MODIFIED/DELETED/BOOKMARK/ERROR;
//!   resuming from a resourceVersion replays history, a compacted one gets an in-stream 410
//!   ERROR; synthetic ADDED events for `resourceVersion` unset or `0`; KEP-3157
//!   `sendInitialEvents`; selector watches turn "stopped matching" into DELETED; bookmarks;
//!   `timeoutSeconds` (see the `watch` module).
//! - **Writes**: POST (409 `AlreadyExists`, `generateName`), PUT with optimistic concurrency
//!   (stale `resourceVersion` → 409 `Conflict`; custom resources require one), PATCH as
//!   JSON patch, merge patch, strategic merge patch (built-ins only — custom resources
//!   answer 415, as for real — applied as a merge patch), and server-side apply
//!   (`application/apply-patch+yaml`, requires `fieldManager`, creates missing objects, a
//!   `resourceVersion` in the body is a precondition), DELETE with `preconditions` and
//!   finalizers (`deletionTimestamp` until the last finalizer goes), `dryRun=All`,
//!   deletecollection. Secrets get `stringData` folded into `data`.
//! - **Errors** are `Status` objects with the real reasons, codes and message wording.
//! - **Representations**: JSON, and `PartialObjectMetadata[List]` when the `Accept` header
//!   asks for it (kube-rs' metadata-only API and `metadata_watcher`).
//!
//! # What it deliberately does not do
//!
//! - **Authentication and authorization**: bearer tokens are recorded in the request log
//!   ([`FakeApiServer::requests`]) and not checked. Every request is described by
//!   [`RequestAttributes`] (user token, verb, group, resource, subresource, namespace,
//!   name) and offered to an optional [`Authorizer`] ([`FakeApiServer::set_authorizer`]);
//!   a denial answers 403 the way RBAC does. [`RbacAuthorizer`] (the [`rbac`] module)
//!   enforces RBAC objects — Keyway's own manifests — over a table of tokens.
//! - **Admission**: no namespace lifecycle (objects may be created in namespaces that do not
//!   exist; deleting a namespace does not delete its contents), no defaulting beyond what
//!   the `defaults` module lists, no schema validation of custom resources.
//! - **Field management**: server-side apply is a merge of the applied fields; there is no
//!   `managedFields`, no ownership, no apply conflicts, and fields a manager stops applying
//!   are not removed.
//! - Protobuf, CBOR, `as=Table`, subresources other than `status`, garbage collection of
//!   owner references, TLS.
//!
//! # Use
//!
//! ```no_run
//! # async fn example() {
//! use keyway_fakeapi::FakeApiServer;
//! let server = FakeApiServer::start().await;
//! server.apply(serde_json::json!({
//!     "apiVersion": "v1", "kind": "Secret",
//!     "metadata": {"name": "tls", "namespace": "default"},
//!     "stringData": {"tls.crt": "..."}
//! }));
//! let kubeconfig = server.write_kubeconfig(std::path::Path::new("/tmp"), "token-a");
//! // KUBECONFIG=<kubeconfig> keyway ...
//! server.faults().compact();
//! # }
//! ```
#![forbid(unsafe_code)]

mod auth;
mod body;
mod defaults;
mod discovery;
mod faults;
mod handler;
mod list;
mod log;
mod meta;
mod params;
pub mod rbac;
mod render;
mod resources;
mod routes;
mod selectors;
mod server;
mod state;
mod status;
mod store;
mod watch;
mod write;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize as _;
use serde_json::{json, Value};

pub use auth::{Authorizer, Decision, RequestAttributes, ResourceAttributes};
pub use faults::Faults;
pub use log::RequestRecord;
pub use rbac::RbacAuthorizer;

use render::Representation;
use resources::ResourceType;
use state::{lock, Shared};
use store::ObjectKey;
use write::{DeleteOptions, Part, UpdateOptions};

/// A fake API server listening on `127.0.0.1`. Dropping it shuts it down: the port is
/// closed and open connections and watch streams are cut.
pub struct FakeApiServer {
    shared: Arc<Shared>,
}

impl FakeApiServer {
    /// Starts a server on `127.0.0.1` on a free port, on the current tokio runtime.
    pub async fn start() -> FakeApiServer {
        let listener = server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("keyway-fakeapi: cannot listen on 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = Shared::new(listener, addr);
        server::spawn_accept_loop(shared.clone());
        FakeApiServer { shared }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Writes a kubeconfig for this server whose user authenticates with bearer `token`
    /// and whose context's namespace is `default`, as `dir/kubeconfig-<token>` (characters
    /// other than ASCII letters, digits, `-` and `_` replaced by `_`, so that every token
    /// gets its own file). Returns its path.
    pub fn write_kubeconfig(&self, dir: &Path, token: &str) -> PathBuf {
        let file: String = token
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("kubeconfig-{file}"));
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fakeapi", "cluster": {"server": self.url()}}],
            "users": [{"name": "fakeapi", "user": {"token": token}}],
            "contexts": [{"name": "fakeapi", "context": {"cluster": "fakeapi", "user": "fakeapi", "namespace": "default"}}],
            "current-context": "fakeapi",
            "preferences": {},
        });
        let yaml = serde_yaml_ng::to_string(&config).expect("a JSON value serializes as YAML");
        std::fs::write(&path, yaml)
            .unwrap_or_else(|e| panic!("keyway-fakeapi: cannot write {}: {e}", path.display()));
        path
    }

    /// Creates `object`, or replaces the stored object of the same apiVersion/kind/
    /// namespace/name whole, status included (a stored status is kept if `object` has
    /// none; `resourceVersion` and `uid` in `object` are ignored).
    /// Emits ADDED or MODIFIED — or nothing if it is unchanged, as for any write. A
    /// namespaced object without a namespace goes to `default`. Returns the stored object.
    /// Panics on objects the server would reject.
    pub fn apply(&self, object: Value) -> Value {
        let (rt, version) = resolve_object(&object);
        let stored = self
            .shared
            .update(|s| write::put(&mut s.store, rt, version, object))
            .unwrap_or_else(|e| panic!("keyway-fakeapi: apply rejected: {}", e.message));
        render::object(&stored, rt, version, Representation::Full)
    }

    /// [`FakeApiServer::apply`]s every document of a multi-document YAML stream (a
    /// `kind: List` document applies its items). Returns the stored objects.
    pub fn apply_yaml(&self, yaml: &str) -> Vec<Value> {
        let mut applied = Vec::new();
        for document in serde_yaml_ng::Deserializer::from_str(yaml) {
            let object = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("keyway-fakeapi: invalid YAML: {e}"));
            if object.is_null() {
                continue;
            }
            if object["kind"] == "List" {
                let items = object["items"].as_array().cloned().unwrap_or_default();
                applied.extend(items.into_iter().map(|item| self.apply(item)));
            } else {
                applied.push(self.apply(object));
            }
        }
        applied
    }

    /// Deletes an object as a DELETE request would (an object with finalizers only gets its
    /// `deletionTimestamp`). Returns whether it existed.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        let (rt, _) = resolve(api_version, kind);
        let key = object_key(rt, namespace, name);
        match self
            .shared
            .update(|s| write::delete(&mut s.store, rt, &key, &DeleteOptions::default()))
        {
            Ok(_) => true,
            Err(e) if e.code == 404 => false,
            Err(e) => panic!("keyway-fakeapi: delete rejected: {}", e.message),
        }
    }

    /// The stored object, as a GET through `api_version` returns it.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let (rt, version) = resolve(api_version, kind);
        let key = object_key(rt, namespace, name);
        let stored = self.shared.lock().store.get(rt, &key)?;
        Some(render::object(&stored, rt, version, Representation::Full))
    }

    /// Replaces the object's `status`, as a controller's status update would: a new
    /// resourceVersion and a MODIFIED event (none if unchanged), `generation` untouched.
    /// Panics if the object does not exist.
    pub fn set_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) {
        let (rt, version) = resolve(api_version, kind);
        let key = object_key(rt, namespace, name);
        self.shared
            .update(|s| {
                write::update(
                    &mut s.store,
                    rt,
                    version,
                    &key,
                    json!({"status": status}),
                    Part::Status,
                    UpdateOptions::default(),
                )
            })
            .unwrap_or_else(|e| panic!("keyway-fakeapi: set_status rejected: {}", e.message));
    }

    /// The current resourceVersion (of the latest write).
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().store.resource_version()
    }

    /// A handle for injecting faults.
    pub fn faults(&self) -> Faults {
        Faults {
            shared: self.shared.clone(),
        }
    }

    /// Every request answered so far, in order of completion.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log.snapshot()
    }

    pub fn clear_requests(&self) {
        self.shared.log.clear();
    }

    /// Installs (or, with `None`, removes) the authorizer every resource and non-resource
    /// request is checked against; denied requests get 403 Forbidden.
    pub fn set_authorizer(&self, authorizer: Option<Arc<dyn Authorizer>>) {
        *lock(&self.shared.authorizer) = authorizer;
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        server::shutdown(&self.shared);
    }
}

fn resolve(api_version: &str, kind: &str) -> (&'static ResourceType, &'static str) {
    resources::by_api_version_kind(api_version, kind)
        .unwrap_or_else(|| panic!("keyway-fakeapi: {api_version} {kind} is not a served kind"))
}

fn resolve_object(object: &Value) -> (&'static ResourceType, &'static str) {
    let text = |field: &str| {
        object
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    resolve(text("apiVersion"), text("kind"))
}

/// Test-facing calls name namespaced objects without a namespace as in `default`.
fn object_key(rt: &ResourceType, namespace: Option<&str>, name: &str) -> ObjectKey {
    if rt.namespaced {
        ObjectKey::new(Some(namespace.unwrap_or("default")), name)
    } else {
        ObjectKey::new(None, name)
    }
}
