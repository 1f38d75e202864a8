//! Configuration mistakes stop `pbx control-plane`, `pbx edge-node` and `pbx migrate` at
//! once, saying what is wrong, before they touch any engine.

use crate::support::*;
use pbx_engines::testkit::free_port;

/// A complete control-plane configuration whose engines are all unreachable (nothing
/// listens on the ports): a test that gets past the configuration fails on them instead.
fn control_plane_toml(extra: &[(&str, &str)]) -> String {
    let dead = free_port();
    let mut sections = vec![
        ("http", format!("listen = \"127.0.0.1:{}\"", free_port())),
        ("platform", "base_domain = \"pbx.test\"\noperator_email = \"ops@pbx.test\"".to_owned()),
        ("database", format!("url = \"postgres://nobody@127.0.0.1:{dead}/none\"")),
        ("bus", format!("redis_url = \"redis://127.0.0.1:{dead}\"")),
        (
            "objects",
            format!("endpoint = \"http://127.0.0.1:{dead}\"\nregion = \"us-east-1\"\nbucket = \"b\"\naccess_key_id = \"a\"\nsecret_access_key = \"s\"\npath_style = true"),
        ),
        ("mail", format!("host = \"127.0.0.1\"\nport = {dead}\nsecurity = \"none\"\nfrom = \"x@pbx.test\"")),
        (
            "secrets",
            "master_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\nedge_token = \"t\"".to_owned(),
        ),
    ];
    for (section, line) in extra {
        match sections.iter_mut().find(|(s, _)| s == section) {
            Some((_, body)) => {
                body.push('\n');
                body.push_str(line);
            }
            None => sections.push((section, (*line).to_owned())),
        }
    }
    sections
        .iter()
        .map(|(s, body)| format!("[{s}]\n{body}\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn edge_toml(extra: &[(&str, &str)]) -> String {
    let dead = free_port();
    let mut sections = vec![
        ("node", "id = \"edge-1\"\nregion = \"eu\"".to_owned()),
        (
            "control_plane",
            format!("url = \"http://127.0.0.1:{dead}\"\nedge_token = \"t\""),
        ),
        ("bus", format!("redis_url = \"redis://127.0.0.1:{dead}\"")),
        ("http", format!("listen = \"127.0.0.1:{}\"", free_port())),
    ];
    for (section, line) in extra {
        match sections.iter_mut().find(|(s, _)| s == section) {
            Some((_, body)) => {
                body.push('\n');
                body.push_str(line);
            }
            None => sections.push((section, (*line).to_owned())),
        }
    }
    sections
        .iter()
        .map(|(s, body)| format!("[{s}]\n{body}\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_config_keys_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A misspelt key anywhere, including the engine sections, must not be silently ignored
    // (a typo in `pasword` would otherwise mean running without the intended setting).
    let cases: &[(&str, &str, &str)] = &[
        ("http", "colour = \"red\"", "colour"),
        ("database", "pool_sise = 5", "pool_sise"),
        ("objects", "path_styel = true", "path_styel"),
        ("mail", "pasword = \"x\"", "pasword"),
        ("secrets", "edge_tokne = \"x\"", "edge_tokne"),
        ("telephony", "sip = \"0.0.0.0:5060\"", "telephony"),
    ];
    for (i, (section, line, key)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("cp-{i}.toml"));
        std::fs::write(&file, control_plane_toml(&[(section, line)])).expect("write config");
        let f = file.display().to_string();
        for args in [
            vec!["control-plane", "--config", &f],
            vec!["migrate", "--config", &f],
        ] {
            let out = pbx_cli(&args, &[]).await;
            assert!(
                out.code.is_some_and(|c| c != 0),
                "pbx {args:?} with [{section}] {line}: should fail: {out:?}"
            );
            assert!(
                out.stderr.contains(key),
                "pbx {args:?}: stderr should name {key:?}: {}",
                out.stderr
            );
        }
    }
    for (i, (section, line, key)) in [
        ("node", "colour = \"red\"", "colour"),
        ("bus", "key_prefx = \"a\"", "key_prefx"),
    ]
    .iter()
    .enumerate()
    {
        let file = dir.path().join(format!("edge-{i}.toml"));
        std::fs::write(&file, edge_toml(&[(section, line)])).expect("write config");
        let out = pbx_cli(&["edge-node", "--config", &file.display().to_string()], &[]).await;
        assert!(
            out.code.is_some_and(|c| c != 0),
            "edge-node with [{section}] {line}: {out:?}"
        );
        assert!(
            out.stderr.contains(key),
            "stderr should name {key:?}: {}",
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_broken_config_files_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such.toml").display().to_string();
    for cmd in ["control-plane", "edge-node", "migrate"] {
        let out = pbx_cli(&[cmd, "--config", &missing], &[]).await;
        assert!(
            out.code.is_some_and(|c| c != 0),
            "pbx {cmd} with a missing file: {out:?}"
        );
        assert!(
            out.stderr.contains("no-such.toml"),
            "pbx {cmd}: stderr names the file: {}",
            out.stderr
        );
    }
    // A required key missing, and a value of the wrong type.
    let no_db = control_plane_toml(&[]).replace("[database]\nurl = ", "[database]\n# url = ");
    let file = dir.path().join("no-db.toml");
    std::fs::write(&file, no_db).expect("write config");
    let out = pbx_cli(&["control-plane", "--config", &file.display().to_string()], &[]).await;
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    assert!(
        out.stderr.contains("url"),
        "stderr names the missing key: {}",
        out.stderr
    );
    let file = dir.path().join("bad-port.toml");
    std::fs::write(
        &file,
        control_plane_toml(&[]).replace("security = \"none\"", "security = \"sometimes\""),
    )
    .expect("write config");
    let out = pbx_cli(&["control-plane", "--config", &file.display().to_string()], &[]).await;
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    assert!(
        out.stderr.contains("sometimes"),
        "stderr names the bad value: {}",
        out.stderr
    );
    // Not TOML at all.
    let file = dir.path().join("garbage.toml");
    std::fs::write(&file, "this is [not toml").expect("write config");
    let out = pbx_cli(&["control-plane", "--config", &file.display().to_string()], &[]).await;
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    assert!(out.stderr.contains("garbage.toml"), "{}", out.stderr);
}
