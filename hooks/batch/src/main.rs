//! `svdm-hooks hook list | hook config | hook run <n>`: the module's batch hooks.

use std::io::Write as _;
use std::process::ExitCode;

use svdm_hooks::protocol::{self, Hook, HookError, Output, Paths};

fn usage() -> ExitCode {
    eprintln!("usage: svdm-hooks hook (list | config | run <index>)");
    ExitCode::from(2)
}

fn report(err: &HookError) -> ExitCode {
    // addon-operator logs stderr; module-sdk reports failures as {"message": ...}.
    eprintln!("{}", serde_json::json!({"message": err.to_string()}));
    ExitCode::FAILURE
}

fn print(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let hooks = svdm_hooks::hooks();
    let refs: Vec<&dyn Hook> = hooks.iter().map(Box::as_ref).collect();
    match args.as_slice() {
        ["hook" | "hooks", "list"] => print(&protocol::list_text(&refs)),
        ["hook" | "hooks", "config"] => print(&protocol::config_json(&refs).to_string()),
        ["hook" | "hooks", "run", index] => {
            let Some(hook) = index.parse::<usize>().ok().and_then(|i| refs.get(i)) else {
                return report(&HookError::Invalid(format!("no hook with index {index}")));
            };
            let paths = Paths::from_env();
            let result = protocol::read_input(&paths).and_then(|input| {
                let mut output = Output::default();
                hook.run(&input, &mut output)?;
                protocol::write_output(&paths, &output)
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => report(&e),
            }
        }
        _ => usage(),
    }
}
