//! `[apps.proxy]`: the built-in reverse proxy in front of an app.

use anyhow::bail;

use crate::config::raw::{
    RawProxy, DEFAULT_DRAIN_TIMEOUT, DEFAULT_HOLD_MAX, DEFAULT_HOLD_TIMEOUT,
    DEFAULT_MAINTENANCE_BODY, DEFAULT_PROXY_TIMEOUT,
};
use crate::config::ProxyConfig;

/// The proxy section: an upstream exactly when the app has no container (whose live port is
/// the upstream otherwise), and the defaults. Errors name the key (the caller puts `proxy` in
/// front).
pub(super) fn validate_proxy(raw: RawProxy, has_container: bool) -> anyhow::Result<ProxyConfig> {
    match (raw.upstream, has_container) {
        (Some(_), true) => bail!(
            "upstream: the app has a container, whose live port is the upstream; remove upstream"
        ),
        (None, false) => bail!(
            "upstream: required for an app without [apps.container] (the address its process listens on)"
        ),
        _ => {}
    }
    let timeout = raw.timeout.unwrap_or(DEFAULT_PROXY_TIMEOUT);
    if timeout.is_zero() {
        bail!("timeout: must be greater than zero");
    }
    Ok(ProxyConfig {
        listen: raw.listen,
        upstream: raw.upstream,
        timeout,
        drain_timeout: raw.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT),
        maintenance: raw.maintenance,
        maintenance_body: raw
            .maintenance_body
            .unwrap_or_else(|| DEFAULT_MAINTENANCE_BODY.to_string()),
        hold_timeout: raw.hold_timeout.unwrap_or(DEFAULT_HOLD_TIMEOUT),
        hold_max: match raw.hold_max {
            Some(0) => {
                bail!("hold_max: must be at least 1 (hold_timeout = \"0s\" turns holding off)")
            }
            Some(n) => n,
            None => DEFAULT_HOLD_MAX,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::testing::{parse, APP};
    use crate::config::{
        DEFAULT_CHECK_FAILURES, DEFAULT_HOLD_MAX, DEFAULT_HOLD_TIMEOUT, DEFAULT_MAINTENANCE_BODY,
    };

    #[test]
    fn a_proxy_needs_exactly_one_upstream_source_and_its_own_listen_address() {
        let fixed = "[apps.proxy]\nlisten = \"127.0.0.1:8080\"\nupstream = \"127.0.0.1:9000\"\n";
        let (config, _) = parse(&format!("{APP}{fixed}")).unwrap();
        let proxy = config.apps[0].proxy.as_ref().unwrap();
        assert_eq!(proxy.drain_timeout, Duration::from_secs(30));
        assert_eq!(proxy.timeout, Duration::from_secs(60));
        assert!(!proxy.maintenance);
        assert_eq!(proxy.maintenance_body, DEFAULT_MAINTENANCE_BODY);

        let bare = "[apps.proxy]\nlisten = \"127.0.0.1:8080\"\n";
        let err = format!("{:#}", parse(&format!("{APP}{bare}")).unwrap_err());
        assert!(err.contains("proxy: upstream: required"), "{err}");

        let container = "[apps.container]\nimage = \"app:1\"\nmount = \"/code\"\n";
        let err = format!(
            "{:#}",
            parse(&format!("{APP}{container}{fixed}")).unwrap_err()
        );
        assert!(
            err.contains("proxy: upstream: the app has a container"),
            "{err}"
        );
        assert!(parse(&format!("{APP}{container}{bare}")).is_ok());

        let second = APP
            .replace("\"web\"", "\"api\"")
            .replace("dockhand-web", "dockhand-api");
        let err = format!(
            "{:#}",
            parse(&format!("{APP}{fixed}{second}{fixed}")).unwrap_err()
        );
        assert!(
            err.contains("apps[1] (api).proxy.listen: 127.0.0.1:8080 is already used"),
            "{err}"
        );
        let on_server =
            "[apps.proxy]\nlisten = \"127.0.0.1:8700\"\nupstream = \"127.0.0.1:9000\"\n";
        let err = format!("{:#}", parse(&format!("{APP}{on_server}")).unwrap_err());
        assert!(err.contains("already used by the server"), "{err}");
    }

    #[test]
    fn hold_and_fail_fast_defaults_and_limits() {
        let proxy = "[apps.container]\nimage = \"web:1\"\nmount = \"/app\"\n[apps.proxy]\nlisten = \"127.0.0.1:8080\"\n";
        let (config, _) = parse(&format!("{APP}{proxy}")).unwrap();
        let p = config.apps[0].proxy.as_ref().unwrap();
        assert_eq!(
            (p.hold_timeout, p.hold_max),
            (DEFAULT_HOLD_TIMEOUT, DEFAULT_HOLD_MAX)
        );
        assert_eq!(
            config.apps[0].revision_file.as_deref(),
            Some(Path::new("REVISION"))
        );
        let err = format!(
            "{:#}",
            parse(&format!("{APP}{proxy}hold_max = 0\n")).unwrap_err()
        );
        assert!(err.contains("hold_max: must be at least 1"), "{err}");
        let check = "[apps.check]\nurl = \"http://127.0.0.1:8080/version\"\n";
        let (config, _) = parse(&format!("{APP}{check}")).unwrap();
        assert_eq!(
            config.apps[0].check.as_ref().unwrap().failures,
            DEFAULT_CHECK_FAILURES
        );
        let (config, _) = parse(&format!("{APP}revision_file = \"\"\n")).unwrap();
        assert_eq!(config.apps[0].revision_file, None);
        let err = format!(
            "{:#}",
            parse(&format!("{APP}revision_file = \"../x\"\n")).unwrap_err()
        );
        assert!(err.contains("revision_file"), "{err}");
    }
}
