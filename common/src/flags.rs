//! Command-line flags as the Go seed spells them (`-api=ADDR`, `-api ADDR`) and as people
//! type them today (`--api ADDR`, `--api=ADDR`), each with an environment-variable form.
//!
//! Hand-written rather than a crate: lexopt and friends treat `-api` as three short flags,
//! and the seed's users type exactly that.

use std::collections::HashMap;
use std::fmt;

/// One flag: its name without dashes, its environment variable, and its line in `--help`.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub name: &'static str,
    /// Environment variable read when the flag is not given; empty for none.
    pub env: &'static str,
    /// Placeholder for the value in `--help` (`ADDR`, `DURATION`); empty for a boolean switch.
    pub value: &'static str,
    /// The default shown in `--help`; the caller applies it.
    pub default: &'static str,
    pub help: &'static str,
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    /// Run with these values.
    Run(Values),
    Help,
    Version,
}

/// Flag values as given on the command line or, failing that, in the environment.
#[derive(Debug, Default)]
pub struct Values {
    /// Every value given, in order: a repeated flag keeps them all.
    values: HashMap<&'static str, Vec<String>>,
    /// Positional words after the flags' own, for binaries with subcommands.
    pub rest: Vec<String>,
}

impl Values {
    /// The raw value of a flag, if given on the command line or in its environment variable;
    /// the last one when repeated.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).and_then(|v| v.last()).map(String::as_str)
    }

    /// Every value of a repeatable flag, each also split at commas (`-allow-cidr=A,B`, and
    /// the environment form, which can only be given once).
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        let given = self.values.get(name).map(Vec::as_slice).unwrap_or_default();
        given.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|v| !v.is_empty()).collect()
    }

    /// A boolean switch: given bare, or as `=true`/`=false`.
    pub fn is_set(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v != "false")
    }

    /// Parses a flag's value with `parse`, naming the flag in the error.
    pub fn parse_with<T, E: fmt::Display>(
        &self,
        name: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<T, FlagError> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => parse(raw).map_err(|e| FlagError::Invalid {
                flag: name.to_string(),
                value: raw.to_string(),
                reason: e.to_string(),
            }),
        }
    }
}

/// A command line that cannot be run. Its `Display` is the one line printed before exit 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagError {
    Unknown(String),
    MissingValue(String),
    Invalid {
        flag: String,
        value: String,
        reason: String,
    },
    UnexpectedArgument(String),
    /// A flag whose meaning is gone; the text says what to use instead.
    Retired {
        flag: String,
        instead: String,
    },
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagError::Unknown(flag) => write!(f, "unknown flag -{flag}"),
            FlagError::MissingValue(flag) => write!(f, "flag -{flag} needs a value"),
            FlagError::Invalid { flag, value, reason } => {
                write!(f, "invalid value {value:?} for -{flag}: {reason}")
            }
            FlagError::UnexpectedArgument(arg) => write!(f, "unexpected argument {arg:?}"),
            FlagError::Retired { flag, instead } => write!(f, "-{flag} is not supported: {instead}"),
        }
    }
}

impl std::error::Error for FlagError {}

/// Parses `args` (without the program name) against `spec`, then fills what is missing from
/// the environment through `env`. `positional` says how many bare words are allowed.
pub fn parse(
    spec: &[Flag],
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
    positional: usize,
) -> Result<Command, FlagError> {
    let mut values = Values::default();
    let mut args = args.into_iter();
    let mut only_positional = false;
    while let Some(arg) = args.next() {
        let stripped = if only_positional { None } else { arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) };
        let Some(body) = stripped.filter(|b| !b.is_empty()) else {
            if arg == "--" && !only_positional {
                only_positional = true;
                continue;
            }
            if values.rest.len() >= positional {
                return Err(FlagError::UnexpectedArgument(arg));
            }
            values.rest.push(arg);
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        match name {
            "h" | "help" => return Ok(Command::Help),
            "version" => return Ok(Command::Version),
            _ => {}
        }
        let flag = spec.iter().find(|f| f.name == name).ok_or_else(|| FlagError::Unknown(name.to_string()))?;
        let value = match (inline, flag.value.is_empty()) {
            (Some(v), _) => v,
            (None, true) => "true".to_string(),
            (None, false) => args.next().ok_or_else(|| FlagError::MissingValue(name.to_string()))?,
        };
        values.values.entry(flag.name).or_default().push(value);
    }
    for flag in spec {
        if flag.env.is_empty() || values.values.contains_key(flag.name) {
            continue;
        }
        if let Some(v) = env(flag.env).filter(|v| !v.is_empty()) {
            values.values.insert(flag.name, vec![v]);
        }
    }
    Ok(Command::Run(values))
}

/// The `--help` text: a summary, a usage line, then one line per flag with its environment
/// variable and default.
pub fn usage(program: &str, about: &str, synopsis: &str, spec: &[Flag]) -> String {
    let mut out =
        format!("{program}: {about}\n\nUsage: {program} {synopsis}\n\nFlags (also --flag VALUE, --flag=VALUE):\n");
    for flag in spec {
        let left = if flag.value.is_empty() {
            format!("  -{}", flag.name)
        } else {
            format!("  -{}={}", flag.name, flag.value)
        };
        out.push_str(&format!("{left:<38} {}\n", flag.help));
        let mut notes = Vec::new();
        if !flag.env.is_empty() {
            notes.push(format!("env {}", flag.env));
        }
        if !flag.default.is_empty() {
            notes.push(format!("default {}", flag.default));
        }
        if !notes.is_empty() {
            out.push_str(&format!("{:<38} ({})\n", "", notes.join("; ")));
        }
    }
    out.push_str(&format!("{:<38} {}\n{:<38} {}\n", "  -help", "print this help", "  -version", "print the version"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &[Flag] = &[
        Flag { name: "api", env: "T_API", value: "ADDR", default: "127.0.0.1:10080", help: "API address" },
        Flag { name: "verbose", env: "", value: "", default: "", help: "talk more" },
    ];

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Command, FlagError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse(SPEC, args.iter().map(|s| s.to_string()), |k| env.get(k).cloned(), 0)
    }

    fn api(args: &[&str], env: &[(&str, &str)]) -> Option<String> {
        match run(args, env) {
            Ok(Command::Run(v)) => v.get("api").map(str::to_string),
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn accepts_every_spelling_of_a_flag() {
        for args in [&["-api=0.0.0.0:1"][..], &["-api", "0.0.0.0:1"], &["--api", "0.0.0.0:1"], &["--api=0.0.0.0:1"]] {
            assert_eq!(api(args, &[]).as_deref(), Some("0.0.0.0:1"), "{args:?}");
        }
    }

    #[test]
    fn flag_beats_environment_which_beats_nothing() {
        assert_eq!(api(&["-api=a:1"], &[("T_API", "b:2")]).as_deref(), Some("a:1"));
        assert_eq!(api(&[], &[("T_API", "b:2")]).as_deref(), Some("b:2"));
        assert_eq!(api(&[], &[("T_API", "")]), None);
        assert_eq!(api(&[], &[]), None);
    }

    #[test]
    fn repeated_flags_keep_every_value() {
        match run(&["-api=a:1", "--api", "b:2,c:3"], &[]) {
            Ok(Command::Run(v)) => {
                assert_eq!(v.get("api"), Some("b:2,c:3"));
                assert_eq!(v.get_all("api"), ["a:1", "b:2", "c:3"]);
            }
            other => panic!("{other:?}"),
        }
        match run(&[], &[("T_API", "x:1, y:2")]) {
            Ok(Command::Run(v)) => assert_eq!(v.get_all("api"), ["x:1", "y:2"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn switches_take_no_value() {
        match run(&["-verbose", "-api", "x:1"], &[]) {
            Ok(Command::Run(v)) => {
                assert!(v.is_set("verbose"));
                assert_eq!(v.get("api"), Some("x:1"));
            }
            other => panic!("{other:?}"),
        }
        match run(&["-verbose=false"], &[]) {
            Ok(Command::Run(v)) => assert!(!v.is_set("verbose")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn help_and_version_win() {
        assert!(matches!(run(&["-help"], &[]), Ok(Command::Help)));
        assert!(matches!(run(&["--help"], &[]), Ok(Command::Help)));
        assert!(matches!(run(&["-h"], &[]), Ok(Command::Help)));
        assert!(matches!(run(&["--version"], &[]), Ok(Command::Version)));
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        let cases: &[(&[&str], &str)] = &[
            (&["-nope"], "unknown flag -nope"),
            (&["--api"], "flag -api needs a value"),
            (&["stray"], "unexpected argument \"stray\""),
        ];
        for (args, want) in cases {
            let err = run(args, &[]).expect_err("must fail");
            assert_eq!(err.to_string(), *want);
        }
    }

    #[test]
    fn usage_lists_every_flag_with_env_and_default() {
        let text = usage("prog", "does things", "[flags]", SPEC);
        assert!(text.contains("-api=ADDR"));
        assert!(text.contains("env T_API; default 127.0.0.1:10080"));
        assert!(text.contains("-verbose"));
        assert!(text.contains("-version"));
    }
}
