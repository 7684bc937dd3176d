//! `conduit completion`: the bash script, sourced into a real bash, completes subcommands,
//! nested subcommands and flags; the other shells' scripts name the subcommands; an
//! unknown shell is refused with the ones there are.

use std::process::Command;

const CONDUIT: &str = env!("CARGO_BIN_EXE_conduit");

fn completion(shell: &str) -> std::process::Output {
    Command::new(CONDUIT)
        .args(["completion", shell])
        .output()
        .unwrap()
}

/// What bash's completion of `words` (the last one being completed) offers.
fn bash_completes(words: &[&str]) -> Vec<String> {
    let script = String::from_utf8(completion("bash").stdout).unwrap();
    let words_array: String = words.iter().map(|w| format!("{w:?} ")).collect();
    let program = format!(
        "{script}\nCOMP_WORDS=({words_array})\nCOMP_CWORD={}\nCOMP_LINE={:?}\nCOMP_POINT=${{#COMP_LINE}}\n_conduit conduit {:?} {:?}\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        words.len() - 1,
        words.join(" "),
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_flags() {
    assert_eq!(bash_completes(&["conduit", "st"]), ["stat"]);
    let local = bash_completes(&["conduit", "local", "u"]);
    assert!(local.contains(&"up".to_string()), "{local:?}");
    let flags = bash_completes(&["conduit", "stat", "--na"]);
    assert!(flags.contains(&"--namespace".to_string()), "{flags:?}");
    let all = bash_completes(&["conduit", ""]);
    for sub in ["install", "inject", "routes", "tap", "completion"] {
        assert!(all.contains(&sub.to_string()), "{sub} missing: {all:?}");
    }
}

#[test]
fn every_shell_gets_a_script_and_an_unknown_one_is_named() {
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = completion(shell);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("routes") && script.contains("namespace"),
            "{shell}"
        );
    }
    let out = completion("tcsh");
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("invalid value 'tcsh'") && said.contains("bash, elvish, fish"),
        "{said}"
    );
}
