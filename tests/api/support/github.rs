//! A fake GitHub REST API on loopback that holds dockhand to GitHub's published description
//! (npm `@octokit/openapi`, the document GitHub generates its REST docs from, installed by
//! `scripts/test-env`): every request must be an operation the description has, with the
//! headers GitHub documents, query parameters it declares and a JSON body its schema accepts;
//! every answer is the description's own example for the operation, patched with what this
//! fake keeps (deployments, their statuses, commit statuses, installation tokens), and checked
//! against the answer's schema too. What does not conform is recorded as a violation, which
//! [`FakeGithub::calls`] turns into a test failure.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// The description, relative to the repository.
const SPEC: &str = "node_modules/@octokit/openapi/generated/api.github.com.json";

/// GitHub's REST description, read once per test process.
struct Spec {
    doc: Value,
    /// `(method, path template split at '/', template)`.
    ops: Vec<(String, Vec<String>, String)>,
}

fn spec() -> &'static Spec {
    static SPEC_DOC: OnceLock<Spec> = OnceLock::new();
    SPEC_DOC.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SPEC);
        let text = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/test-env (it runs npm ci)",
                path.display()
            )
        });
        let doc: Value = serde_json::from_slice(&text).unwrap();
        let mut ops = Vec::new();
        for (template, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let parts = template.split('/').map(str::to_string).collect();
                ops.push((method.to_uppercase(), parts, template.clone()));
            }
        }
        Spec { doc, ops }
    })
}

impl Spec {
    /// The operation `method path` is, if the description has it.
    fn operation(&self, method: &str, path: &str) -> Option<&Value> {
        let parts: Vec<&str> = path.split('/').collect();
        let (_, _, template) = self.ops.iter().find(|(m, t, _)| {
            m == method
                && t.len() == parts.len()
                && t.iter()
                    .zip(&parts)
                    .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
        })?;
        Some(&self.doc["paths"][template][method.to_lowercase()])
    }

    /// `v` with every `$ref` replaced by what it points at, and OpenAPI 3.0's `nullable` made
    /// JSON Schema's `type: [t, "null"]`.
    fn resolve(&self, v: &Value, depth: usize) -> Value {
        if depth > 40 {
            return json!({});
        }
        match v {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                    let target = self.doc.pointer(r.trim_start_matches('#')).unwrap();
                    return self.resolve(target, depth + 1);
                }
                let mut out: serde_json::Map<String, Value> = map
                    .iter()
                    .map(|(k, v)| (k.clone(), self.resolve(v, depth + 1)))
                    .collect();
                if out.get("nullable") == Some(&Value::Bool(true)) {
                    if let Some(t) = out.get("type").cloned() {
                        out.insert("type".into(), json!([t, "null"]));
                    }
                }
                Value::Object(out)
            }
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.resolve(v, depth + 1)).collect())
            }
            other => other.clone(),
        }
    }
}

/// Where `instance` breaks `schema` (resolved), one line each.
fn violations(schema: &Value, instance: &Value) -> Vec<String> {
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(schema)
        .expect("GitHub's schema compiles");
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// How the fake expects dockhand to authenticate.
#[derive(Clone)]
pub enum Auth {
    /// A personal or fine-grained token.
    Token(String),
    /// A GitHub App: JWTs signed with the key whose public half this is, from this app id;
    /// installation tokens it hands out expire `token_life` seconds after they are made.
    App {
        app_id: u64,
        public_pem: Vec<u8>,
        installation_id: u64,
        token_life: i64,
    },
}

/// One request the fake took.
#[derive(Clone, Debug)]
pub struct Call {
    pub path: String,
    pub query: String,
    /// The description's `operationId`.
    pub op: String,
    pub body: Value,
    pub bearer: String,
}

#[derive(Clone, Debug)]
pub struct Deployment {
    pub id: i64,
    pub sha: String,
    pub environment: String,
    pub payload: Value,
    /// Each status posted, oldest first: `(state, description, log_url)`.
    pub statuses: Vec<(String, String, Option<String>)>,
}

/// A commit status: `(sha, state, context, target_url)`.
pub type CommitStatus = (String, String, String, Option<String>);

/// An answer to give instead of the real one: status and headers.
type Injected = (u16, Vec<(&'static str, String)>);

#[derive(Default)]
struct Book {
    calls: Vec<Call>,
    violations: Vec<String>,
    deployments: Vec<Deployment>,
    commit_statuses: Vec<CommitStatus>,
    injected: VecDeque<Injected>,
    /// The operation whose answer is held (after it took effect), and what releases it.
    hold: Option<(String, Arc<Notify>)>,
    /// Installation tokens handed out: `(token, expires, unix s)`.
    tokens: Vec<(String, i64)>,
    /// The token the next installation tokens are (a git server's password), if set.
    hand_out: Option<String>,
    next_id: i64,
}

pub struct FakeGithub {
    /// `api_url` for dockhand.
    pub url: String,
    book: Arc<Mutex<Book>>,
    auth: Arc<Mutex<Auth>>,
}

#[derive(Clone)]
struct Shared {
    book: Arc<Mutex<Book>>,
    auth: Arc<Mutex<Auth>>,
}

impl FakeGithub {
    pub async fn start(auth: Auth) -> FakeGithub {
        spec();
        let book = Arc::new(Mutex::new(Book {
            next_id: 100,
            ..Book::default()
        }));
        let auth = Arc::new(Mutex::new(auth));
        let app = axum::Router::new().fallback(take).with_state(Shared {
            book: book.clone(),
            auth: auth.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/v3", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeGithub { url, book, auth }
    }

    /// The installation tokens the App is given from now on are `token`.
    pub fn hand_out(&self, token: &str) {
        self.book.lock().unwrap().hand_out = Some(token.to_string());
    }

    /// From now on only `token` is accepted (a rotated token).
    pub fn rotate(&self, token: &str) {
        *self.auth.lock().unwrap() = Auth::Token(token.to_string());
    }

    /// Every request so far; panics if any broke GitHub's description.
    pub fn calls(&self) -> Vec<Call> {
        let book = self.book.lock().unwrap();
        assert!(
            book.violations.is_empty(),
            "requests that GitHub's REST description does not allow:\n{}",
            book.violations.join("\n")
        );
        book.calls.clone()
    }

    /// The calls as `op` lines (`create-deployment <env>`, `deployment-status <id> <state>`,
    /// `commit-status <state>`), the reads (`list-…`, tokens) left out.
    pub fn writes(&self) -> Vec<String> {
        self.calls()
            .iter()
            .filter_map(|c| match c.op.as_str() {
                "repos/create-deployment" => Some(format!(
                    "create-deployment {} {}",
                    c.body["environment"].as_str().unwrap_or("-"),
                    &c.body["ref"].as_str().unwrap_or("-")[..7]
                )),
                "repos/create-deployment-status" => Some(format!(
                    "deployment-status {} {}",
                    c.path.split('/').nth(5).unwrap_or("-"),
                    c.body["state"].as_str().unwrap_or("-")
                )),
                "repos/create-commit-status" => Some(format!(
                    "commit-status {} {}",
                    &c.path.rsplit('/').next().unwrap_or("-")[..7],
                    c.body["state"].as_str().unwrap_or("-")
                )),
                _ => None,
            })
            .collect()
    }

    pub fn deployments(&self) -> Vec<Deployment> {
        self.book.lock().unwrap().deployments.clone()
    }

    pub fn commit_statuses(&self) -> Vec<CommitStatus> {
        self.book.lock().unwrap().commit_statuses.clone()
    }

    /// The next requests get these answers (after being checked), in order, doing nothing.
    pub fn answer(&self, answers: Vec<Injected>) {
        self.book.lock().unwrap().injected.extend(answers);
    }

    /// The next `op` (an `operationId`) takes effect, but its answer waits until the returned
    /// `Notify` is told — as if the connection broke after GitHub acted.
    pub fn hold(&self, op: &str) -> Arc<Notify> {
        let release = Arc::new(Notify::new());
        self.book.lock().unwrap().hold = Some((op.to_string(), release.clone()));
        release
    }

    /// Wait (up to 30 s) until `n` writes were made; returns them.
    pub async fn wait_writes(&self, n: usize) -> Vec<String> {
        for _ in 0..600 {
            let writes = self.writes();
            if writes.len() >= n {
                return writes;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("GitHub got {:#?}, not {n} writes", self.writes());
    }
}

async fn take(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path()
        .strip_prefix("/api/v3")
        .unwrap_or(uri.path())
        .to_string();
    let query = uri.query().unwrap_or("").to_string();
    let spec = spec();
    let Some(op) = spec.operation(method.as_str(), &path) else {
        let mut book = shared.book.lock().unwrap();
        book.violations.push(format!(
            "{method} {path}: no such operation in GitHub's REST API"
        ));
        return (StatusCode::NOT_FOUND, "no such operation").into_response();
    };
    let op_id = op["operationId"].as_str().unwrap_or("-").to_string();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::String("<not JSON>".into()))
    };
    let mut problems = check_request(spec, op, &headers, &query, &body);
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let hold = {
        let mut book = shared.book.lock().unwrap();
        let auth = shared.auth.lock().unwrap().clone();
        if let Err(p) = authorized(&auth, &book, &op_id, &bearer) {
            problems.push(p);
        }
        book.violations.extend(
            problems
                .iter()
                .map(|p| format!("{method} {path} ({op_id}): {p}")),
        );
        book.calls.push(Call {
            path: path.clone(),
            query: query.clone(),
            op: op_id.clone(),
            body: body.clone(),
            bearer,
        });
        if let Some((status, extra)) = book.injected.pop_front() {
            let mut response = (
                StatusCode::from_u16(status).unwrap(),
                Json(json!({ "message": "injected" })),
            )
                .into_response();
            for (name, value) in extra {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            return response;
        }
        if !problems.is_empty() {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "message": "invalid" })),
            )
                .into_response();
        }
        match &book.hold {
            Some((held, _)) if *held == op_id => book.hold.take().map(|(_, n)| n),
            _ => None,
        }
    };
    let (status, answer) = act(&shared, spec, op, &op_id, &path, &query, &body);
    if let Some(release) = hold {
        release.notified().await;
    }
    (status, Json(answer)).into_response()
}

/// Headers, query parameters and body against the operation's description.
fn check_request(
    spec: &Spec,
    op: &Value,
    headers: &HeaderMap,
    query: &str,
    body: &Value,
) -> Vec<String> {
    let mut problems = Vec::new();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("accept") != Some("application/vnd.github+json") {
        problems.push(format!(
            "Accept is {:?}, not application/vnd.github+json",
            header("accept")
        ));
    }
    if header("x-github-api-version") != Some("2022-11-28") {
        problems.push("no X-GitHub-Api-Version: 2022-11-28".into());
    }
    if header("user-agent").is_none_or(str::is_empty) {
        problems.push("no User-Agent (GitHub refuses requests without one)".into());
    }
    let parameters = spec.resolve(&op["parameters"], 0);
    let declared: Vec<&Value> = parameters
        .as_array()
        .map(|p| p.iter().filter(|p| p["in"] == "query").collect())
        .unwrap_or_default();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match declared.iter().find(|p| p["name"] == *name) {
            None => problems.push(format!("query parameter {name:?} is not the operation's")),
            Some(p) if p["schema"]["type"] == "integer" && value.parse::<i64>().is_err() => {
                problems.push(format!(
                    "query parameter {name}={value:?} is not an integer"
                ))
            }
            Some(_) => {}
        }
    }
    let schema = &op["requestBody"]["content"]["application/json"]["schema"];
    match (schema.is_null(), body.is_null()) {
        (true, false) => problems.push("a body the operation does not take".into()),
        (false, true) if op["requestBody"]["required"] == true => {
            problems.push("no body; the operation requires one".into())
        }
        (false, false) => problems.extend(violations(&spec.resolve(schema, 0), body)),
        _ => {}
    }
    problems
}

/// Whether `bearer` may call `op`: a JWT of the App for its own endpoints, else the token.
fn authorized(auth: &Auth, book: &Book, op: &str, bearer: &str) -> Result<(), String> {
    let app_op = matches!(
        op,
        "apps/get-repo-installation" | "apps/create-installation-access-token"
    );
    match auth {
        Auth::Token(token) if bearer == token && !app_op => Ok(()),
        Auth::Token(_) => Err("not the token".into()),
        Auth::App {
            app_id, public_pem, ..
        } if app_op => {
            let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_pem).unwrap();
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            validation.set_issuer(&[app_id.to_string()]);
            validation.set_required_spec_claims(&["exp", "iat", "iss"]);
            let claims = jsonwebtoken::decode::<Value>(bearer, &key, &validation)
                .map_err(|e| format!("the App's JWT does not verify: {e}"))?
                .claims;
            let life = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
            if life > 600 {
                return Err(format!(
                    "a JWT valid {life} s; GitHub takes 10 minutes at most"
                ));
            }
            Ok(())
        }
        Auth::App { .. } => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            match book.tokens.iter().find(|(t, _)| t == bearer) {
                Some((_, expires)) if *expires > now => Ok(()),
                Some(_) => Err("an expired installation token".into()),
                None => Err("not an installation token this App was given".into()),
            }
        }
    }
}

/// What `op` does to the book, and its answer: the description's example, patched.
fn act(
    shared: &Shared,
    spec: &Spec,
    op: &Value,
    op_id: &str,
    path: &str,
    query: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let code = match op_id {
        "repos/list-deployments"
        | "repos/list-deployment-statuses"
        | "apps/get-repo-installation" => "200",
        _ => "201",
    };
    let content = &op["responses"][code]["content"]["application/json"];
    let example = content["examples"]
        .as_object()
        .and_then(|e| e.values().next())
        .map(|e| spec.resolve(e, 0)["value"].clone())
        .unwrap_or(Value::Null);
    let single = |v: &Value| match v {
        Value::Array(items) => items[0].clone(),
        other => other.clone(),
    };
    let parts: Vec<&str> = path.split('/').collect();
    let auth = shared.auth.lock().unwrap().clone();
    let mut book = shared.book.lock().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let answer = match op_id {
        "repos/create-deployment" => {
            book.next_id += 1;
            let d = Deployment {
                id: book.next_id,
                sha: body["ref"].as_str().unwrap_or_default().to_string(),
                environment: body["environment"]
                    .as_str()
                    .unwrap_or("production")
                    .to_string(),
                payload: body["payload"].clone(),
                statuses: Vec::new(),
            };
            book.deployments.push(d.clone());
            deployment_answer(&example, &d, body)
        }
        "repos/list-deployments" => {
            let q: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            let wanted = |k: &str, v: &str| q.iter().all(|(qk, qv)| qk != k || qv == v);
            let template = single(&example);
            Value::Array(
                book.deployments
                    .iter()
                    .rev()
                    .filter(|d| wanted("sha", &d.sha) && wanted("environment", &d.environment))
                    .map(|d| deployment_answer(&template, d, &json!({})))
                    .collect(),
            )
        }
        "repos/create-deployment-status" => {
            let id: i64 = parts[5].parse().unwrap_or(-1);
            let status = (
                body["state"].as_str().unwrap_or_default().to_string(),
                body["description"].as_str().unwrap_or_default().to_string(),
                body["log_url"].as_str().map(str::to_string),
            );
            let Some(d) = book.deployments.iter_mut().find(|d| d.id == id) else {
                return (StatusCode::NOT_FOUND, json!({ "message": "Not Found" }));
            };
            d.statuses.push(status.clone());
            let n = d.statuses.len();
            status_answer(&example, id, n, &status)
        }
        "repos/list-deployment-statuses" => {
            let id: i64 = parts[5].parse().unwrap_or(-1);
            let Some(d) = book.deployments.iter().find(|d| d.id == id) else {
                return (StatusCode::NOT_FOUND, json!({ "message": "Not Found" }));
            };
            let template = single(&example);
            Value::Array(
                d.statuses
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(i, s)| status_answer(&template, id, i + 1, s))
                    .collect(),
            )
        }
        "repos/create-commit-status" => {
            let sha = parts[5].to_string();
            book.commit_statuses.push((
                sha,
                body["state"].as_str().unwrap_or_default().to_string(),
                body["context"].as_str().unwrap_or("default").to_string(),
                body["target_url"].as_str().map(str::to_string),
            ));
            let mut a = example.clone();
            a["state"] = body["state"].clone();
            a["context"] = body["context"].clone();
            a["description"] = body["description"].clone();
            a["target_url"] = body.get("target_url").cloned().unwrap_or(Value::Null);
            a
        }
        "apps/get-repo-installation" => {
            let Auth::App {
                installation_id, ..
            } = auth
            else {
                return (StatusCode::NOT_FOUND, json!({ "message": "Not Found" }));
            };
            let mut a = example.clone();
            a["id"] = json!(installation_id);
            a
        }
        "apps/create-installation-access-token" => {
            let Auth::App { token_life, .. } = auth else {
                return (StatusCode::NOT_FOUND, json!({ "message": "Not Found" }));
            };
            let expires = now.unix_timestamp() + token_life;
            let token = book
                .hand_out
                .clone()
                .unwrap_or_else(|| format!("ghs_fake{}", book.tokens.len() + 1));
            book.tokens.push((token.clone(), expires));
            let mut a = example.clone();
            a["token"] = json!(token);
            a["expires_at"] = json!(time::OffsetDateTime::from_unix_timestamp(expires)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap());
            a
        }
        other => {
            book.violations
                .push(format!("{other}: dockhand has no business calling it"));
            return (StatusCode::NOT_FOUND, json!({ "message": "Not Found" }));
        }
    };
    let schema = spec.resolve(&content["schema"], 0);
    let wrong = violations(&schema, &answer);
    if !wrong.is_empty() {
        book.violations.push(format!(
            "the fake's own answer to {op_id} breaks the schema: {wrong:?}"
        ));
    }
    (StatusCode::from_u16(code.parse().unwrap()).unwrap(), answer)
}

fn deployment_answer(example: &Value, d: &Deployment, body: &Value) -> Value {
    let mut a = example.clone();
    a["id"] = json!(d.id);
    a["sha"] = json!(d.sha);
    a["ref"] = json!(d.sha);
    a["environment"] = json!(d.environment);
    a["original_environment"] = json!(d.environment);
    a["payload"] = d.payload.clone();
    if let Some(description) = body.get("description") {
        a["description"] = description.clone();
    }
    a
}

fn status_answer(
    example: &Value,
    deployment: i64,
    n: usize,
    (state, description, log_url): &(String, String, Option<String>),
) -> Value {
    let mut a = example.clone();
    a["id"] = json!(deployment * 1000 + n as i64);
    a["state"] = json!(state);
    a["description"] = json!(description);
    a["log_url"] = json!(log_url.clone().unwrap_or_default());
    a
}
