//! The real uWSGI + Flask app: its image (built by `scripts/test-env`) and an origin holding
//! the fixture app.

use crate::support::helpers::*;

pub(crate) const APP_PY: &str = include_str!("../../fixtures/uwsgi-app/app.py");
pub(crate) const UWSGI_INI: &str = include_str!("../../fixtures/uwsgi-app/uwsgi.ini");

pub(crate) fn image() -> String {
    std::env::var("DOCKHAND_TEST_IMAGE_UWSGI1").expect(
        "DOCKHAND_TEST_IMAGE_UWSGI1 is not set: run scripts/test-env and source its env file",
    )
}

/// The fixture app with `ini` as its uwsgi.ini, 200 filler files and VERSION `v0`.
pub(crate) fn origin_with(ini: &str) -> Origin {
    let origin = Origin::new();
    origin.write("app.py", APP_PY);
    origin.write("uwsgi.ini", ini);
    origin.write("VERSION", "v0\n");
    for i in 0..200 {
        origin.write(&format!("static/f{i:03}.txt"), &format!("filler {i}\n"));
    }
    origin
}
