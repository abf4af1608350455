//! The code's layering, as ARCHITECTURE.md states it, checked on the source itself: which
//! module may import which, and no cycle between the crate's top-level modules. A change that
//! breaks a rule fails here with the file and the line, not in a review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, with its whole text.
fn files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    out
}

/// Every `.rs` file under `dir`, with its text minus comments and test modules.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    files(dir)
        .into_iter()
        .map(|(path, text)| {
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            let code: Vec<&str> = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect();
            (path, code.join("\n"))
        })
        .collect()
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The crate's top-level module a file belongs to (`src/deploy/run.rs` → `deploy`).
fn top(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a file's code names as `crate::<module>`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
        // `crate::{a, b::c}`
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or_default();
            for item in group.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, code) in sources(&src()) {
        let from = top(&path);
        if from == "lib" || from == "main" {
            continue;
        }
        let deps = graph.entry(from.clone()).or_default();
        deps.extend(imports(&code).into_iter().filter(|d| *d != from));
    }
    graph
}

#[test]
fn the_wire_types_commit_ids_and_redaction_import_nothing_of_the_server() {
    for (path, code) in sources(&src()) {
        let leaf = matches!(top(&path).as_str(), "api" | "commit" | "redact");
        if leaf {
            assert!(
                !code.contains("crate::"),
                "{} imports from the crate; api, commit and redact are leaves",
                path.display()
            );
        }
    }
}

#[test]
fn http_never_calls_git2_or_the_container_engine_directly() {
    for (path, code) in sources(&src().join("http")) {
        for crate_name in ["git2::", "bollard::"] {
            assert!(
                !code.contains(crate_name),
                "{} uses {crate_name}: HTTP handlers go through deploy and runtime",
                path.display()
            );
        }
    }
}

#[test]
fn the_deploy_code_calls_the_engine_boundary_never_docker_itself() {
    // The one place that names the Docker engine is where the shared engine is made; the full
    // path, swaps, reloads and recovery see only `runtime::Engine`, so a second engine needs no
    // change there.
    for (path, code) in sources(&src()) {
        let inside_runtime = path.starts_with(src().join("runtime"));
        let makes_the_engine = path == src().join("services.rs") || path == src().join("lib.rs");
        if inside_runtime || makes_the_engine {
            continue;
        }
        for name in ["bollard::", "runtime::Docker", "Docker::", "&Docker"] {
            assert!(
                !code.contains(name),
                "{} names {name}: deploy code goes through runtime::Engine",
                path.display()
            );
        }
    }
}

#[test]
fn running_a_hook_process_knows_nothing_of_the_store() {
    let process = src().join("deploy/hooks/process.rs");
    let (_, code) = sources(&src().join("deploy/hooks"))
        .into_iter()
        .find(|(path, _)| *path == process)
        .expect("deploy/hooks/process.rs runs a hook's process");
    for name in ["store", "Services", "Steps"] {
        assert!(
            !code.contains(name),
            "{} names {name}: running a process must not reach the store",
            process.display()
        );
    }
}

#[test]
fn config_and_the_cli_client_do_not_import_what_runs() {
    let graph = graph();
    for (module, forbidden) in [
        ("config", ["deploy", "http", "store", "services"]),
        ("client", ["deploy", "http", "store", "config"]),
        ("tree", ["deploy", "http", "store", "services"]),
    ] {
        let deps = &graph[module];
        for f in forbidden {
            assert!(!deps.contains(f), "{module} imports {f}: {deps:?}");
        }
    }
}

#[test]
fn metrics_imports_only_config_and_store_types() {
    // The registry is fed from outside (the store's events, the proxies' handles, one call
    // where a delivery, a poll or a notification's attempt ends): it never reaches into what
    // runs.
    let graph = graph();
    let deps = &graph["metrics"];
    let allowed: BTreeSet<String> = ["config", "store"].map(String::from).into();
    assert!(
        deps.is_subset(&allowed),
        "metrics imports {:?}: only config and store",
        deps.difference(&allowed).collect::<Vec<_>>()
    );
    for (module, imports_metrics) in &graph {
        if imports_metrics.contains("metrics") {
            assert!(
                ["proxy", "services", "http", "deploy", "startup", "notify"]
                    .contains(&module.as_str()),
                "{module} imports metrics"
            );
        }
    }
}

#[test]
fn no_two_top_level_modules_import_each_other_even_through_others() {
    let graph = graph();
    // Depth-first search for a path back to the start.
    for start in graph.keys() {
        let mut stack: Vec<Vec<&String>> = vec![vec![start]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = *path.last().unwrap();
            for next in graph.get(last).into_iter().flatten() {
                if next == start {
                    let cycle: Vec<&str> = path.iter().map(|s| s.as_str()).collect();
                    panic!("module cycle: {} -> {start}", cycle.join(" -> "));
                }
                if seen.insert(next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push(longer);
                }
            }
        }
    }
}

#[test]
fn no_source_file_is_over_700_lines_with_its_tests() {
    // A file past this holds more than one job; split it along the job (functions have their
    // own bar: clippy's `too_many_lines` at 80, set in clippy.toml and lib.rs).
    let long: Vec<String> = files(&src())
        .into_iter()
        .map(|(path, text)| (path, text.lines().count()))
        .filter(|(_, lines)| *lines > 700)
        .map(|(path, lines)| format!("{} has {lines} lines", path.display()))
        .collect();
    assert!(long.is_empty(), "split these files: {long:#?}");
}
