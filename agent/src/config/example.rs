//! The commented example of `/etc/mesh/meshd.toml` that the package installs: every key the file
//! takes, each with its flag's help and its default, generated from the clap definition so that it
//! cannot fall behind the flags.

use clap::CommandFactory;

use super::Config;
use super::file::keys;

/// The example file: a header, then per key its help as comments and `# key = default`.
pub fn example() -> String {
    let command = Config::command();
    let mut text = String::from(
        "# meshd's settings: each key is one of meshd's flags (`meshd --help`), without its\n\
         # dashes in front. The command line and MESH_* environment variables win over this\n\
         # file. An unknown key or a bad value stops meshd with one line naming it\n\
         # (`journalctl -u meshd`). Uncomment a line to change it.\n",
    );
    for key in keys() {
        let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(&key)) else {
            continue;
        };
        text.push('\n');
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        for line in help.lines().flat_map(|line| wrap(line, WIDTH - 2)) {
            text.push_str(format!("# {line}").trim_end());
            text.push('\n');
        }
        let value = match arg.get_default_values().first() {
            Some(default) => toml_value(&default.to_string_lossy()),
            None => {
                let name = arg
                    .get_value_names()
                    .and_then(|names| names.first())
                    .map_or_else(|| key.to_uppercase(), ToString::to_string);
                format!("\"<{name}>\"")
            }
        };
        text.push_str(&format!("# {key} = {value}\n"));
    }
    text
}

/// How wide the example's comments are.
const WIDTH: usize = 98;

/// `line` broken between words into lines of at most `width` characters (a longer word stands
/// alone).
fn wrap(line: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in line.split_whitespace() {
        let last = lines.last_mut().expect("one line at least");
        if last.is_empty() {
            last.push_str(word);
        } else if last.len() + 1 + word.len() <= width {
            last.push(' ');
            last.push_str(word);
        } else {
            lines.push(word.to_owned());
        }
    }
    lines
}

/// A default as TOML spells it: numbers bare, everything else a quoted string.
fn toml_value(default: &str) -> String {
    if default.parse::<i64>().is_ok() {
        default.to_owned()
    } else {
        toml::Value::String(default.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn comments_are_wrapped_between_words() {
        assert_eq!(wrap("a bb ccc dddd", 6), ["a bb", "ccc", "dddd"]);
        assert_eq!(wrap("", 6), [""]);
        assert_eq!(wrap("unbreakable-word x", 4), ["unbreakable-word", "x"]);
        assert!(example().lines().all(|l| l.len() <= WIDTH), "{}", example());
    }

    #[test]
    fn every_key_is_in_the_example_and_its_defaults_load() {
        let text = example();
        let mut uncommented = String::new();
        for key in keys() {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("# {key} = ")))
                .unwrap_or_else(|| panic!("{key} is not in the example:\n{text}"));
            if !line.contains("\"<") {
                uncommented.push_str(&line[2..]);
                uncommented.push('\n');
            }
        }
        assert!(text.contains("# gossip-port = 7946\n"), "{text}");
        assert!(text.contains("# state-dir = \"/var/lib/mesh\"\n"), "{text}");
        assert!(text.contains("# hostname = \"<HOSTNAME>\"\n"), "{text}");
        // The whole example parses as TOML as it is (all comments) and with its defaults set.
        assert!(text.parse::<toml::Table>().expect("TOML").is_empty());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("meshd.toml");
        std::fs::write(&file, &uncommented).unwrap();
        let args = ["meshd", "--config", file.to_str().unwrap()].map(Into::into);
        super::super::file::load_from(args.to_vec(), Path::new("/nonexistent"))
            .unwrap_or_else(|err| panic!("{err}\n{uncommented}"));
    }
}
