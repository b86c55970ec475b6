//! The command line's promises, checked on clap's own description of it.

use clap::CommandFactory;

use crate::Cli;

/// Every argument of every command, hidden ones included, but positionals and
/// help/version, as (command path, argument id, env var).
fn options() -> Vec<(String, String, Option<String>)> {
    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String, Option<String>)>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if a.is_positional() || id == "help" || id == "version" {
                continue;
            }
            let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
            out.push((path.to_string(), id.to_string(), env));
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, "magnetar", &mut out);
    out
}

/// README.md says every option can also be set by an environment variable.
#[test]
fn every_option_has_an_environment_variable() {
    let opts = options();
    // The walk reaches the subcommands (and their flattened --db) and hidden options.
    assert!(opts
        .iter()
        .any(|(p, id, _)| p == "magnetar crawl" && id == "status_interval"));
    assert!(opts
        .iter()
        .any(|(p, id, _)| p == "magnetar db prune" && id == "db"));
    let missing: Vec<String> = opts
        .iter()
        .filter(|(_, _, env)| env.as_deref().is_none_or(|e| !e.starts_with("MAGNETAR_")))
        .map(|(p, id, _)| format!("{p} --{id}"))
        .collect();
    assert!(
        missing.is_empty(),
        "options without a MAGNETAR_ environment variable: {missing:?}"
    );
}

/// One variable means one thing: two options sharing a variable must be the same
/// option (like --db, or the global --log-format) in different commands.
#[test]
fn environment_variables_are_not_reused_for_different_options() {
    let mut seen: std::collections::BTreeMap<String, String> = Default::default();
    for (path, id, env) in options() {
        let Some(env) = env else { continue };
        if let Some(prev) = seen.insert(env.clone(), id.clone()) {
            assert_eq!(prev, id, "{env} is used by --{prev} and by `{path}` --{id}");
        }
    }
}

/// `crawl --shard I/N`: 0 ≤ I < N ≤ 256, a clear error otherwise; 0/1 by default.
#[test]
fn crawl_shard_is_validated() {
    use clap::Parser;
    let ok = Cli::try_parse_from(["magnetar", "crawl", "--shard", "2/3"]);
    assert!(ok.is_ok(), "{:?}", ok.err());
    for (bad, why) in [
        ("3/3", "0 to 2"),
        ("0/0", "1 to 256"),
        ("1/257", "1 to 256"),
        ("x", "expected I/N"),
        ("1/3/4", "expected I/N"),
    ] {
        let e = Cli::try_parse_from(["magnetar", "crawl", "--shard", bad])
            .err()
            .unwrap_or_else(|| panic!("--shard {bad} accepted"))
            .to_string();
        assert!(e.contains(why), "--shard {bad}: {e}");
    }
}
