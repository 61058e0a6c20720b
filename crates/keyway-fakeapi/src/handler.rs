//! One request, from arrival to response: injected faults, routing, authorization, the
//! verb, and the request log.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::{Map, Value};

use crate::auth::{Decision, RequestAttributes, ResourceAttributes};
use crate::body::{self, Body};
use crate::discovery;
use crate::list;
use crate::log::RequestRecord;
use crate::params::Query;
use crate::render::{self, Representation};
use crate::resources::{Origin, ResourceType};
use crate::routes::{self, ResourcePath, Route};
use crate::state::{lock, Shared};
use crate::status::{self, ApiError};
use crate::store::ObjectKey;
use crate::watch;
use crate::write::{
    self, CreateOptions, DeleteOptions, Deleted, Part, PatchRequest, PatchType, UpdateOptions,
};

/// hyper's service function. An `Err` makes hyper drop the connection without answering,
/// which is how requests on already-open connections are refused while the server is
/// "down".
pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, io::Error> {
    {
        let state = shared.lock();
        if state.faults.refusing || state.shutdown {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "keyway-fakeapi is refusing connections",
            ));
        }
    }
    let at = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let raw_query = request.uri().query().unwrap_or_default().to_string();
    let token = bearer_token(request.headers());
    let query = Query::parse(&raw_query);
    let response = respond(&shared, request, &query, token.clone())
        .await
        .unwrap_or_else(ApiError::into_response);
    shared.log.push(RequestRecord {
        method,
        path,
        query: raw_query,
        token,
        status: response.status().as_u16(),
        is_watch: query.is_watch(),
        at,
    });
    Ok(response)
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn respond(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
    query: &Query,
    token: Option<String>,
) -> Result<Response<Body>, ApiError> {
    if let Some(code) = shared.lock().faults.fail_all {
        return Err(ApiError::injected(code));
    }
    let route = routes::parse(request.uri().path());
    let accept = header_str(request.headers(), header::ACCEPT).map(str::to_string);
    let path = request.uri().path().to_string();
    match route {
        Route::Resource(target) => {
            if !shared.lock().faults.serves(target.rt.group, target.version) {
                return Err(ApiError::path_not_found());
            }
            let verb = verb(request.method(), &target, query)?;
            authorize(
                shared,
                RequestAttributes {
                    token,
                    verb: verb.to_string(),
                    resource: Some(ResourceAttributes {
                        group: target.rt.group.to_string(),
                        version: target.version.to_string(),
                        resource: target.rt.plural.to_string(),
                        subresource: target.subresource.clone(),
                        namespace: target.namespace.clone(),
                        name: target.name.clone(),
                    }),
                    path,
                },
                Some(target.rt),
            )?;
            let repr = render::negotiate(accept.as_deref())?;
            resource(shared, request, query, target, verb, repr).await
        }
        other => {
            authorize(
                shared,
                RequestAttributes {
                    token,
                    verb: request.method().as_str().to_ascii_lowercase(),
                    resource: None,
                    path,
                },
                None,
            )?;
            if request.method() != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            let state = shared.lock();
            discovery::respond(&other, &state.faults, accept.as_deref(), shared.addr)
        }
    }
}

fn authorize(
    shared: &Shared,
    attributes: RequestAttributes,
    rt: Option<&ResourceType>,
) -> Result<(), ApiError> {
    let authorizer = lock(&shared.authorizer).clone();
    match authorizer.map(|a| a.authorize(&attributes)) {
        None | Some(Decision::Allow) => Ok(()),
        Some(Decision::Deny(reason)) => Err(attributes.forbidden(rt, &reason)),
    }
}

/// The Kubernetes verb of a request, or 405 for a method the path does not support.
fn verb(method: &Method, target: &ResourcePath, query: &Query) -> Result<&'static str, ApiError> {
    let collection = target.name.is_none();
    // Namespaced collections accept writes only within a namespace.
    let writable_collection = !target.rt.namespaced || target.namespace.is_some();
    let status = target.subresource.is_some();
    let verb = match *method {
        Method::GET if query.flag("watch")?.unwrap_or(false) && !status => "watch",
        Method::GET if collection => "list",
        Method::GET => "get",
        Method::POST if collection && writable_collection => "create",
        Method::PUT if !collection => "update",
        Method::PATCH if !collection => "patch",
        Method::DELETE if !collection && !status => "delete",
        Method::DELETE if collection && writable_collection => "deletecollection",
        _ => return Err(ApiError::method_not_allowed()),
    };
    Ok(verb)
}

async fn resource(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
    query: &Query,
    target: ResourcePath,
    verb: &str,
    repr: Representation,
) -> Result<Response<Body>, ApiError> {
    let ResourcePath {
        rt,
        version,
        ref namespace,
        ref name,
        ref subresource,
    } = target;
    let namespace = namespace.as_deref();
    let key = || ObjectKey::new(namespace, name.as_deref().unwrap_or_default());
    let part = if subresource.is_some() {
        Part::Status
    } else {
        Part::Main
    };
    let content_type = header_str(request.headers(), header::CONTENT_TYPE)
        .unwrap_or("application/json")
        .to_string();
    let ok = |code: StatusCode, object: &Value| {
        body::json(code, &render::object(object, rt, version, repr))
    };

    match verb {
        "get" => {
            let object = shared
                .lock()
                .store
                .get(rt, &key())
                .ok_or_else(|| ApiError::not_found(rt, name.as_deref().unwrap_or_default()))?;
            Ok(ok(StatusCode::OK, &object))
        }
        "list" => {
            let list = list::list(shared, rt, version, namespace, query, repr).await?;
            Ok(body::json(StatusCode::OK, &list))
        }
        "watch" => {
            watch::watch(
                shared.clone(),
                rt,
                version,
                namespace,
                name.as_deref(),
                query,
                repr,
            )
            .await
        }
        "create" => {
            let dry_run = query.dry_run()?;
            let object = decode_object(rt, &content_type, &read_body(request).await?)?;
            let created = shared.update(|s| {
                write::create(
                    &mut s.store,
                    rt,
                    version,
                    namespace,
                    object,
                    CreateOptions {
                        dry_run,
                        keep_status: false,
                        reject_resource_version: true,
                    },
                )
            })?;
            Ok(ok(StatusCode::CREATED, &created))
        }
        "update" => {
            let dry_run = query.dry_run()?;
            let object = decode_object(rt, &content_type, &read_body(request).await?)?;
            let updated = shared.update(|s| {
                write::update(
                    &mut s.store,
                    rt,
                    version,
                    &key(),
                    object,
                    part,
                    UpdateOptions {
                        dry_run,
                        require_resource_version: rt.origin == Origin::Custom && part == Part::Main,
                    },
                )
            })?;
            Ok(ok(StatusCode::OK, &updated))
        }
        "patch" => {
            let dry_run = query.dry_run()?;
            let patch_type = PatchType::from_content_type(&content_type)
                .filter(|p| write::accepts(rt, p))
                .ok_or_else(|| {
                    ApiError::unsupported_media_type(
                        &content_type,
                        &write::accepted_media_types(rt),
                    )
                })?;
            if patch_type == PatchType::Apply && query.non_empty("fieldManager").is_none() {
                return Err(ApiError::bad_request(
                    "PATCH /apply requires fieldManager: fieldManager is required for apply requests",
                ));
            }
            if patch_type != PatchType::Apply && query.flag("force")?.is_some() {
                return Err(ApiError::invalid_kind(
                    "meta.k8s.io",
                    "PatchOptions",
                    "",
                    vec![status::Cause {
                        field: "force".into(),
                        message: "Forbidden: may not be specified for non-apply patch".into(),
                        reason: "FieldValueForbidden",
                    }],
                ));
            }
            let patch = read_body(request).await?;
            let (patched, created) = shared.update(|s| {
                write::patch(
                    &mut s.store,
                    rt,
                    version,
                    &key(),
                    PatchRequest {
                        patch_type,
                        body: &patch,
                        part,
                        dry_run,
                    },
                )
            })?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(ok(code, &patched))
        }
        "delete" => {
            let options = delete_options(query, &read_body(request).await?)?;
            let deleted = shared.update(|s| write::delete(&mut s.store, rt, &key(), &options))?;
            Ok(match deleted {
                Deleted::Removed(last) if rt.origin == Origin::BuiltIn => body::json(
                    StatusCode::OK,
                    &status::success(rt, &key().name, crate::meta::meta_str(&last, "uid")),
                ),
                Deleted::Removed(object) | Deleted::Finalizing(object) => {
                    ok(StatusCode::OK, &object)
                }
            })
        }
        "deletecollection" => {
            let options = delete_options(query, &read_body(request).await?)?;
            let filter = query.filter(rt, namespace, None)?;
            let items = shared.update(|s| {
                let keys: Vec<ObjectKey> = s
                    .store
                    .current(rt)
                    .iter()
                    .filter(|(_, o)| filter.matches(o))
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut items = Vec::new();
                for key in keys {
                    match write::delete(&mut s.store, rt, &key, &options)? {
                        Deleted::Removed(o) | Deleted::Finalizing(o) => {
                            items.push(render::list_item(&o, rt, version, repr));
                        }
                    }
                }
                let mut metadata = Map::new();
                metadata.insert(
                    "resourceVersion".into(),
                    s.store.resource_version().to_string().into(),
                );
                Ok::<_, ApiError>(render::list(rt, version, repr, metadata, items))
            })?;
            Ok(body::json(StatusCode::OK, &items))
        }
        other => unreachable!("verb() yields no {other}"),
    }
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("error reading the request body: {e}")))
}

/// A POST or PUT body: JSON, or YAML when the content type says so.
fn decode_object(rt: &ResourceType, content_type: &str, bytes: &[u8]) -> Result<Value, ApiError> {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let decoded = match media.as_str() {
        "application/json" | "" | "*/*" => {
            serde_json::from_slice::<Value>(bytes).map_err(|e| e.to_string())
        }
        "application/yaml" => serde_yaml_ng::from_slice::<Value>(bytes).map_err(|e| e.to_string()),
        _ => {
            return Err(ApiError::unsupported_media_type(
                content_type,
                &["application/json", "application/yaml"],
            ))
        }
    };
    decoded.map_err(|e| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: {e}",
            rt.kind
        ))
    })
}

/// `DeleteOptions` from the body (which may be empty) and the query.
fn delete_options(query: &Query, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let mut options = DeleteOptions {
        dry_run: query.dry_run()?,
        ..DeleteOptions::default()
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(options);
    }
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    options.uid = text(&body["preconditions"]["uid"]);
    options.resource_version = text(&body["preconditions"]["resourceVersion"]);
    if let Some(dry_run) = body["dryRun"].as_array() {
        options.dry_run |= dry_run.iter().any(|v| v == "All");
    }
    Ok(options)
}
