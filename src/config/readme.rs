//! The README's configuration reference states the defaults; this test reads it and holds every
//! stated default to the named constant in [`super::raw`] that `validate` puts in. A default
//! changed in code and not in the README (or the other way round) fails here, not in a user's
//! deploy.

use std::collections::BTreeMap;
use std::time::Duration;

use bytesize::ByteSize;
use humantime_serde::re::humantime;

use super::raw::*;

const README: &str = include_str!("../../README.md");

/// `key = value` settings of every ```toml block, by section (`server`, `apps`,
/// `apps.container`, …). Commented-out settings (`# key = value`) count: the reference shows
/// optional sections that way. Several settings on one line are split at `; `; a list may
/// span lines.
fn reference() -> BTreeMap<(String, String), toml::Value> {
    let mut settings = BTreeMap::new();
    let mut in_toml = false;
    let mut section = String::new();
    // A list spread over lines, read once its closing line is in.
    let mut pending = String::new();
    for line in README.lines() {
        if line.starts_with("```") {
            in_toml = line == "```toml";
            continue;
        }
        if !in_toml {
            continue;
        }
        let line = line.strip_prefix("# ").unwrap_or(line).trim();
        if !pending.is_empty() {
            pending.push('\n');
            pending.push_str(line);
            if let Ok(table) = pending.parse::<toml::Table>() {
                pending.clear();
                for (key, value) in table {
                    settings.insert((section.clone(), key), value);
                }
            }
            continue;
        }
        if line.ends_with('[') {
            pending = line.to_string();
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            section = name.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        for part in line.split("; ") {
            let Ok(table) = part.parse::<toml::Table>() else {
                continue;
            };
            for (key, value) in table {
                settings.insert((section.clone(), key), value);
            }
        }
    }
    settings
}

fn stated<'a>(
    reference: &'a BTreeMap<(String, String), toml::Value>,
    section: &str,
    key: &str,
) -> &'a toml::Value {
    reference
        .get(&(section.to_string(), key.to_string()))
        .unwrap_or_else(|| panic!("README's reference does not show {section}.{key}"))
}

fn duration(value: &toml::Value) -> Duration {
    humantime::parse_duration(value.as_str().expect("a duration is a string"))
        .expect("README's duration parses as the config reads it")
}

#[test]
fn the_readme_states_every_default_duration_as_the_code_has_it() {
    let r = reference();
    let durations = [
        ("server", "request_timeout", DEFAULT_REQUEST_TIMEOUT),
        ("server", "history_retention", DEFAULT_HISTORY_RETENTION),
        ("server", "wait_timeout", DEFAULT_WAIT_TIMEOUT),
        ("server", "hook_timeout", DEFAULT_HOOK_TIMEOUT),
        ("apps", "fetch_timeout", DEFAULT_FETCH_TIMEOUT),
        ("apps", "reload_timeout", DEFAULT_RELOAD_TIMEOUT),
        ("apps", "poll", DEFAULT_POLL),
        ("apps.check", "grace", DEFAULT_CHECK_GRACE),
        ("apps.check", "interval", DEFAULT_CHECK_INTERVAL),
        ("apps.check", "timeout", DEFAULT_CHECK_TIMEOUT),
        ("apps.check", "deadline", DEFAULT_CHECK_DEADLINE),
        ("apps.check", "watch", DEFAULT_CHECK_WATCH),
        ("apps.container", "health_grace", DEFAULT_HEALTH_GRACE),
        ("apps.container", "health_interval", DEFAULT_HEALTH_INTERVAL),
        ("apps.container", "health_timeout", DEFAULT_HEALTH_TIMEOUT),
        ("apps.container", "health_deadline", DEFAULT_HEALTH_DEADLINE),
        ("apps.container", "stop_grace", DEFAULT_STOP_GRACE),
        ("apps.container", "watch", DEFAULT_CONTAINER_WATCH),
        ("apps.swarm", "delay", DEFAULT_SWARM_DELAY),
        ("apps.swarm", "monitor", DEFAULT_SWARM_MONITOR),
        ("apps.swarm", "deadline", DEFAULT_SWARM_DEADLINE),
        ("apps.proxy", "timeout", DEFAULT_PROXY_TIMEOUT),
        ("apps.proxy", "drain_timeout", DEFAULT_DRAIN_TIMEOUT),
        ("apps.proxy", "hold_timeout", DEFAULT_HOLD_TIMEOUT),
    ];
    for (section, key, default) in durations {
        assert_eq!(
            duration(stated(&r, section, key)),
            default,
            "{section}.{key}"
        );
    }
}

#[test]
fn the_readme_states_every_default_size_and_count_as_the_code_has_it() {
    let r = reference();
    let sizes = [
        ("server", "body_limit", DEFAULT_BODY_LIMIT),
        ("apps", "max_fetch_size", DEFAULT_MAX_FETCH_SIZE),
        ("apps", "max_tree_size", DEFAULT_MAX_TREE_SIZE),
    ];
    for (section, key, default) in sizes {
        let size: ByteSize = stated(&r, section, key).as_str().unwrap().parse().unwrap();
        assert_eq!(size.as_u64(), default, "{section}.{key}");
    }
    let counts = [
        ("server", "queue_limit", DEFAULT_QUEUE_LIMIT as i64),
        ("apps", "keep_releases", DEFAULT_KEEP_RELEASES as i64),
        ("apps.check", "failures", i64::from(DEFAULT_CHECK_FAILURES)),
        ("apps.container", "keep_images", DEFAULT_KEEP_IMAGES as i64),
        (
            "apps.swarm",
            "parallelism",
            DEFAULT_SWARM_PARALLELISM as i64,
        ),
        ("apps.proxy", "hold_max", DEFAULT_HOLD_MAX as i64),
    ];
    for (section, key, default) in counts {
        assert_eq!(
            stated(&r, section, key).as_integer(),
            Some(default),
            "{section}.{key}"
        );
    }
}

#[test]
fn the_readme_states_every_default_word_and_switch_as_the_code_has_it() {
    let r = reference();
    let words = [
        ("server", "listen", DEFAULT_LISTEN.to_string()),
        ("apps", "branch", DEFAULT_BRANCH.to_string()),
        ("apps", "revision_file", DEFAULT_REVISION_FILE.to_string()),
        ("apps.container", "restart", DEFAULT_RESTART.to_string()),
        (
            "apps.container",
            "docker_config",
            format!("{DEFAULT_DOCKER_CONFIG_DIR}/config.json"),
        ),
        (
            "apps.proxy",
            "maintenance_body",
            DEFAULT_MAINTENANCE_BODY.to_string(),
        ),
    ];
    for (section, key, default) in words {
        assert_eq!(
            stated(&r, section, key).as_str(),
            Some(default.as_str()),
            "{section}.{key}"
        );
    }
    assert_eq!(
        stated(&r, "apps", "lock_on_rollback").as_bool(),
        Some(DEFAULT_LOCK_ON_ROLLBACK)
    );
    assert_eq!(
        stated(&r, "tokens", "read_only").as_bool(),
        Some(DEFAULT_READ_ONLY)
    );
}

#[test]
fn the_readme_shows_the_metrics_keys_and_says_metrics_stay_on_listen_by_default() {
    let r = reference();
    assert_eq!(DEFAULT_METRICS_LISTEN, None);
    assert!(stated(&r, "server", "metrics_listen").as_str().is_some());
    assert!(stated(&r, "server", "metrics_token_env").as_str().is_some());
    assert!(stated(&r, "server", "metrics_token_file")
        .as_str()
        .is_some());
    assert!(README.contains("default: /metrics on `listen`"));
}

#[test]
fn the_readme_lists_the_default_full_path_globs() {
    let r = reference();
    let listed: Vec<&str> = stated(&r, "apps.container", "full_paths")
        .as_array()
        .expect("full_paths is a list")
        .iter()
        .map(|glob| glob.as_str().unwrap())
        .collect();
    assert_eq!(listed, DEFAULT_FULL_PATHS);
}

#[test]
fn the_reference_reader_sees_settings_on_commented_and_shared_lines() {
    let r = reference();
    // A commented setting in a commented section, and the third of four on one line.
    assert_eq!(
        stated(&r, "apps.proxy", "upstream").as_str(),
        Some("127.0.0.1:9000")
    );
    assert_eq!(stated(&r, "apps.check", "timeout").as_str(), Some("2s"));
    assert!(!r.contains_key(&("apps".to_string(), "no_such_key".to_string())));
}
