//! What a benchmark reads of its own process on Linux: CPU time, resident memory and the
//! kernel's clock tick rate.

/// The process's user + system CPU time so far, in clock ticks: fields 14 and 15 of
/// `/proc/self/stat`, which cover every thread of the process, live or exited. (Reading
/// `getrusage` would need `unsafe`, which the workspace forbids.)
pub fn process_cpu_ticks() -> u64 {
    cpu_ticks_of("/proc/self/stat")
}

/// The calling thread's time on a CPU so far, in nanoseconds: the first field of
/// `/proc/thread-self/schedstat`. (Not the thread's `stat`, whose CPU times are whole clock
/// ticks: a thread that runs in short bursts would read as zero there.)
#[allow(dead_code)] // Not every bench that includes this file splits CPU by thread.
pub fn thread_cpu_ns() -> u64 {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("/proc/thread-self/schedstat is readable (Linux)");
    schedstat
        .split_whitespace()
        .next()
        .and_then(|field| field.parse().ok())
        .expect("schedstat starts with the thread's CPU time in nanoseconds")
}

fn cpu_ticks_of(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path} is readable (Linux): {e}"));
    // The command name (field 2) is in parentheses and may hold spaces: count fields from
    // the last closing parenthesis, after which field 3 comes first.
    let after_name = &stat[stat.rfind(')').expect("a stat file has the command name in parentheses") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| -> u64 {
        fields[number - 3].parse().unwrap_or_else(|_| panic!("{path} field {number} is a number"))
    };
    field(14) + field(15)
}

/// The process's resident set size (`VmRSS` of `/proc/self/status`), 0 if unreadable.
pub fn process_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.unwrap_or(0) * 1024
}

/// The kernel's clock tick rate (`sysconf(_SC_CLK_TCK)`), read from the `AT_CLKTCK` entry
/// of the auxiliary vector, which the kernel hands every process. 100 if it cannot be read,
/// which is its value on every common Linux build.
pub fn clock_ticks_per_second() -> u64 {
    const AT_NULL: u64 = 0;
    const AT_CLKTCK: u64 = 17;
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else { return 100 };
    // The vector is (type, value) pairs of native words; this bench runs on 64-bit Linux.
    for pair in auxv.chunks_exact(16) {
        let kind = u64::from_ne_bytes(pair[..8].try_into().expect("8 bytes"));
        let value = u64::from_ne_bytes(pair[8..].try_into().expect("8 bytes"));
        match kind {
            AT_NULL => break,
            AT_CLKTCK if value > 0 => return value,
            _ => {}
        }
    }
    100
}
