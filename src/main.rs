//! The `gguftune` command: parse arguments, run, print any error on one line, exit with its code.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) if cli::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gguftune: {err:#}");
            ExitCode::from(cli::exit_code(&err))
        }
    }
}
