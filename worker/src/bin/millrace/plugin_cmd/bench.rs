//! `millrace plugin bench`: records per second, time and fuel per record, resident memory per instance of a
//! plugin over a corpus (what `make bench` reports).

use super::*;

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

pub(super) fn run(args: BenchArgs) -> Result<ExitCode> {
    let runtime = Runtime::new(EngineConfig {
        max_instances: args.live_instances.max(8) + 8,
        meter_fuel: !args.no_fuel,
        ..EngineConfig::default()
    })?;
    let compile_started = Instant::now();
    let plugin = load(&runtime, &args.plugin)?;
    let compile = compile_started.elapsed();
    let limits = args.limits.limits();
    let corpus =
        std::fs::read_to_string(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let values: Vec<&[u8]> = corpus
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::as_bytes)
        .collect();
    if values.is_empty() {
        bail!("{} holds no records", args.input.display());
    }
    let avg_bytes = values.iter().map(|v| v.len()).sum::<usize>() as f64 / values.len() as f64;
    let records: Vec<Record<'_>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            topic: "bench",
            partition: 0,
            offset: i as i64,
            timestamp_ms: Some(1_700_000_000_000),
            key: None,
            value: Some(v),
            headers: &[],
        })
        .collect();

    // Throughput: whole passes over the corpus on one instance, after a warm-up pass.
    let mut inst = plugin.instance(limits.clone())?;
    let (mut failures, mut outputs, mut rejects) = (0u64, 0u64, 0u64);
    for r in &records {
        let _ = inst.process(r);
    }
    let budget = Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let (mut n, mut fuel) = (0u64, 0u64);
    while start.elapsed() < budget {
        for r in &records {
            let p = inst.process(r);
            fuel += p.fuel_used;
            match p.result {
                Ok(Verdict::Accepted(o)) => outputs += o.len() as u64,
                Ok(Verdict::Rejected { .. }) => rejects += 1,
                Err(_) => failures += 1,
            }
        }
        n += records.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(inst);

    // Instantiation: a fresh instance from the pre-instantiated module, each timed.
    let mut times = Vec::with_capacity(args.instantiations as usize);
    for _ in 0..args.instantiations {
        let mut fresh = plugin.instance(limits.clone())?;
        let t = Instant::now();
        fresh.prepare()?;
        times.push(t.elapsed());
    }
    times.sort();
    let median_us = times.get(times.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1e6);
    let mean_us = times.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e6 / times.len().max(1) as f64;

    // Memory: resident set growth per live instance that processed a record.
    let before = resident_bytes();
    let mut live = Vec::with_capacity(args.live_instances as usize);
    for i in 0..args.live_instances as usize {
        let mut inst = plugin.instance(limits.clone())?;
        let _ = inst.process(&records[i % records.len()]);
        live.push(inst);
    }
    let after = resident_bytes();
    let rss_per_instance = match (before, after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) / u64::from(args.live_instances.max(1))),
        _ => None,
    };
    let memory_per_instance =
        live.iter().map(|i| i.memory_bytes() as u64).sum::<u64>() / live.len().max(1) as u64;
    drop(live);

    let v = json!({
        "plugin": args.plugin.file_name().map(|f| f.to_string_lossy().into_owned()),
        "digest": plugin.digest(),
        "contract": plugin.contract().to_string(),
        "corpus_records": records.len(),
        "avg_record_bytes": avg_bytes.round(),
        "records": n,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "records_per_s": (n as f64 / secs).round(),
        "ns_per_record": (secs * 1e9 / n as f64 * 10.0).round() / 10.0,
        "fuel_per_record": (fuel as f64 / n as f64).round(),
        "outputs": outputs,
        "rejected": rejects,
        "failed": failures,
        "compile_ms": (compile.as_secs_f64() * 1e4).round() / 10.0,
        "instantiate_median_us": (median_us * 100.0).round() / 100.0,
        "instantiate_mean_us": (mean_us * 100.0).round() / 100.0,
        "rss_bytes_per_live_instance": rss_per_instance,
        "linear_memory_bytes_per_instance": memory_per_instance,
    });
    println!("{v}");
    Ok(ExitCode::SUCCESS)
}
