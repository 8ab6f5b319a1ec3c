//! `ringsfu-composer`: the COMPOSED recording process ringsfu launches (see `ringsfu::composer`).
//! Built only with `--features composer` (GStreamer).

fn main() {
    std::process::exit(ringsfu::composer::main_with_args(std::env::args()));
}
