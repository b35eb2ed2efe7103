//! HTTP layer: AdmissionReview in, AdmissionReview out, always HTTP 200 for admission routes.
//!
//! The body is read by hand (not through the JSON extractor) so that an oversize, truncated or
//! malformed review still gets an `AdmissionReview` with an invalid response the API server can
//! report, instead of a bare 4xx/5xx.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND,
};
use serde_json::Value;
use svdm_api::names;

use crate::facts::{self, FactSource};
use crate::tls::ServingCert;
use crate::validate::{self, Operation, Review, Settings};

/// Largest AdmissionReview body accepted. An UPDATE carries the object twice; DataExports are
/// small, so 3 MiB is generous while bounding memory per request.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What the handlers share.
pub struct AppState {
    pub settings: Settings,
    pub facts: Arc<dyn FactSource>,
}

/// Registers the webhook's routes.
pub fn routes(state: web::Data<AppState>) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(state.clone())
            .route("/validate-dataexport", web::post().to(validate_dataexport))
            .route("/validate-pod", web::post().to(validate_pod))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz));
    }
}

/// Builds the HTTPS server on an already bound listener.
pub fn serve(
    listener: TcpListener,
    cert: &ServingCert,
    state: web::Data<AppState>,
    workers: usize,
) -> Result<actix_web::dev::Server, crate::Error> {
    let acceptor = cert.acceptor()?;
    let server = HttpServer::new(move || App::new().configure(routes(state.clone())))
        .workers(workers)
        .tls_handshake_timeout(std::time::Duration::from_secs(5))
        .shutdown_timeout(5)
        .listen_openssl(listener, acceptor)
        .map_err(crate::Error::Serve)?
        .run();
    Ok(server)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.facts.ready() {
        HttpResponse::Ok().content_type("text/plain").body("ok")
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("cluster caches are not loaded yet")
    }
}

fn review_response(response: AdmissionResponse) -> HttpResponse {
    HttpResponse::Ok().json(response.into_review())
}

/// An invalid-request response, carrying the request uid when it could be read.
fn invalid(uid: Option<&str>, reason: &str) -> HttpResponse {
    log::warn!(
        "admission uid={} allowed=false reason=InvalidRequest message={reason:?}",
        uid.unwrap_or("-")
    );
    let mut response = AdmissionResponse::invalid(reason);
    if let Some(uid) = uid {
        response.uid = uid.to_owned();
    }
    review_response(response)
}

/// Reads at most [`MAX_BODY_BYTES`] of the body.
async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> Result<Vec<u8>, String> {
    let too_large = || format!("AdmissionReview body exceeds the {MAX_BODY_BYTES}-byte limit");
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > MAX_BODY_BYTES
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| format!("cannot read the request body: {e}"))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The uid of a review that did not deserialize, if the JSON has one.
fn salvage_uid(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/request/uid")?.as_str().map(str::to_owned)
}

/// Reads and checks an AdmissionReview; any problem becomes the invalid response to send.
async fn read_request(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<AdmissionRequest<DynamicObject>, HttpResponse> {
    let body = read_body(req, payload)
        .await
        .map_err(|reason| invalid(None, &reason))?;
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(&body).map_err(|e| {
        let uid = salvage_uid(&body);
        invalid(uid.as_deref(), &format!("malformed AdmissionReview: {e}"))
    })?;
    let uid = review.request.as_ref().map(|r| r.uid.clone());
    if review.types.api_version != META_API_VERSION_V1 || review.types.kind != META_KIND {
        return Err(invalid(
            uid.as_deref(),
            &format!(
                "unsupported review {}/{}; this webhook speaks {META_API_VERSION_V1} {META_KIND}",
                review.types.api_version, review.types.kind
            ),
        ));
    }
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| invalid(None, "AdmissionReview carries no request"))?;
    if request.uid.is_empty() {
        return Err(invalid(None, "AdmissionReview request has an empty uid"));
    }
    Ok(request)
}

/// The invalid response for a review of a kind this route does not validate.
fn wrong_kind(
    request: &AdmissionRequest<DynamicObject>,
    group: &str,
    kind: &str,
) -> Option<HttpResponse> {
    if request.kind.group == group && request.kind.kind == kind {
        return None;
    }
    Some(invalid(
        Some(&request.uid),
        &format!(
            "this endpoint validates {group}/{kind}, not {}/{}",
            request.kind.group, request.kind.kind
        ),
    ))
}

/// Logs the one line per review and turns the decision into the response.
fn respond(
    request: &AdmissionRequest<DynamicObject>,
    decision: validate::Decision,
) -> HttpResponse {
    log::info!(
        "admission uid={} kind={}/{} object={}/{} operation={:?} dry_run={} allowed={} reason={} warnings={} message={:?}",
        request.uid,
        request.kind.group,
        request.kind.kind,
        request.namespace.as_deref().unwrap_or(""),
        request.name,
        request.operation,
        request.dry_run,
        decision.allowed,
        decision.reason,
        decision.warnings.len(),
        decision.message,
    );
    let mut response = AdmissionResponse::from(request);
    if !decision.allowed {
        response = response.deny(&decision.message);
        response.result.code = 403;
        response.result.reason = "Forbidden".to_owned();
    }
    if !decision.warnings.is_empty() {
        response.warnings = Some(decision.warnings);
    }
    review_response(response)
}

async fn validate_dataexport(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let request = match read_request(&req, payload).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if let Some(resp) = wrong_kind(&request, names::GROUP, names::KIND) {
        return resp;
    }
    let review = to_review(&request);
    let view = match validate::cluster_query(&state.settings, &review) {
        Some(query) => state.facts.view(query).await,
        None => None,
    };
    let decision = validate::validate(&state.settings, &review, view.as_ref());
    respond(&request, decision)
}

/// The optional Pod webhook: refuses new pods that mount a PVC under export.
async fn validate_pod(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let request = match read_request(&req, payload).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if let Some(resp) = wrong_kind(&request, "", "Pod") {
        return resp;
    }
    let review = to_review(&request);
    let pod = review
        .object
        .clone()
        .and_then(|o| serde_json::from_value::<Pod>(o).ok());
    let decision = match pod {
        Some(pod) => validate::validate_pod(
            review.operation,
            &review.namespace,
            &facts::pod_facts(&pod),
            state.facts.exported_pvs().as_deref(),
        ),
        // Not a pod we can read: not ours to judge (the webhook fails open for pods).
        None => validate::validate_pod(
            review.operation,
            &review.namespace,
            &Default::default(),
            None,
        ),
    };
    respond(&request, decision)
}

fn to_review(req: &AdmissionRequest<DynamicObject>) -> Review {
    use kube::core::admission::Operation as Op;
    let to_value =
        |o: &Option<DynamicObject>| o.as_ref().and_then(|o| serde_json::to_value(o).ok());
    Review {
        operation: match req.operation {
            Op::Create => Operation::Create,
            Op::Update => Operation::Update,
            Op::Delete => Operation::Delete,
            Op::Connect => Operation::Connect,
        },
        namespace: req.namespace.clone().unwrap_or_default(),
        name: req.name.clone(),
        sub_resource: req.sub_resource.clone().filter(|s| !s.is_empty()),
        object: to_value(&req.object),
        old_object: to_value(&req.old_object),
    }
}
