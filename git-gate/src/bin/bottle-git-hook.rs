//! `bottle-git-hook`: the git gate's `pre-receive` hook. Installed (as a symlink named
//! `pre-receive`) in the gate's hooks directory; not meant to be run by hand.

fn main() {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut err = std::io::stderr();
    std::process::exit(bottle_git_gate::hook::run_pre_receive(&mut input, &mut err));
}
