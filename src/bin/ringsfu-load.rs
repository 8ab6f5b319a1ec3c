//! `ringsfu-load`: the load generator and benchmark driver (see `ringsfu::load` and
//! BENCHMARKS.md). Exit status: 0 results reported, 1 the run failed, 2 bad arguments,
//! 3 the figures were refused (the load generator itself was saturated; with `--saturate`, at
//! the step a phase reports).

use std::process::ExitCode;

use clap::Parser;
use ringsfu::load::impair::{self, ImpairOptions};
use ringsfu::load::{Options, report, run};

#[derive(Parser, Debug)]
#[command(
    name = "ringsfu-load",
    version,
    about = "Load generator for ringsfu (real ICE, DTLS, SRTP)"
)]
struct Cli {
    #[command(flatten)]
    opts: Options,
}

fn main() -> ExitCode {
    // `ringsfu-load impair ...`: the link impairment relay (ringsfu::load::impair).
    if std::env::args().nth(1).as_deref() == Some("impair") {
        let o = ImpairOptions::parse_from(std::env::args().skip(1));
        return match impair::run(&o) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringsfu-load impair: {e}");
                ExitCode::from(1)
            }
        };
    }
    let cli = Cli::parse();
    let o = cli.opts;
    let (phases, doc) = match run(&o) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("ringsfu-load: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(path) = &o.json {
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("ringsfu-load: {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    if let Some(path) = &o.svg
        && let Err(e) = std::fs::write(path, report::svg(&phases))
    {
        eprintln!("ringsfu-load: {}: {e}", path.display());
        return ExitCode::from(1);
    }
    if phases.iter().any(|p| p.refused.is_some()) {
        for p in &phases {
            if let Some(r) = &p.refused {
                eprintln!("ringsfu-load: {}: figures refused: {r}", p.label);
            }
        }
        return ExitCode::from(3);
    }
    print!("{}", report::table(&phases));
    ExitCode::SUCCESS
}
