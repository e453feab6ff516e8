//! `millrace plugin test`: runs a plugin over sample records (bare values or envelopes with key, headers
//! and metadata) and prints each record's outputs, logs and errors as JSON lines.

use super::*;

/// One input record, owned.
struct Input {
    topic: String,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn bytes_of(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.as_bytes().to_vec()),
        other => Some(other.to_string().into_bytes()),
    }
}

fn read_inputs(args: &TestArgs) -> Result<Vec<Input>> {
    let reader: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f =
            std::fs::File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut inputs = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let offset = inputs.len() as i64;
        let mut input = Input {
            topic: args.topic.clone(),
            partition: 0,
            offset,
            timestamp_ms: Some(args.timestamp.unwrap_or(now)),
            key: None,
            value: Some(line.clone().into_bytes()),
            headers: Vec::new(),
        };
        if args.envelope {
            let env: Value = serde_json::from_str(&line)
                .with_context(|| format!("line {}: an envelope must be a JSON object", i + 1))?;
            let Value::Object(env) = env else {
                bail!("line {}: an envelope must be a JSON object", i + 1)
            };
            input.value = env.get("value").and_then(bytes_of);
            input.key = env.get("key").and_then(bytes_of);
            if let Some(t) = env.get("topic").and_then(Value::as_str) {
                input.topic = t.to_string();
            }
            if let Some(p) = env.get("partition").and_then(Value::as_i64) {
                input.partition = p as i32;
            }
            if let Some(o) = env.get("offset").and_then(Value::as_i64) {
                input.offset = o;
            }
            if let Some(ts) = env.get("timestamp") {
                input.timestamp_ms = ts.as_i64();
            }
            if let Some(Value::Object(h)) = env.get("headers") {
                input.headers = h.iter().map(|(k, v)| (k.clone(), bytes_of(v))).collect();
            }
        }
        inputs.push(input);
    }
    Ok(inputs)
}

fn process(inst: &mut millrace_runtime::PluginInstance, input: &Input) -> Processed {
    let headers = Header::borrow_all(&input.headers);
    inst.process(&Record {
        topic: &input.topic,
        partition: input.partition,
        offset: input.offset,
        timestamp_ms: input.timestamp_ms,
        key: input.key.as_deref(),
        value: input.value.as_deref(),
        headers: &headers,
    })
}

fn output_json(o: &Output) -> Value {
    match o {
        Output::Point(p) => json!({"point": p.line(), "measurement": p.measurement()}),
        Output::Document(d) => json!({
            "document": serde_json::from_str::<Value>(d.body()).unwrap_or(Value::Null),
            "index": d.index(),
            "id": d.id(),
        }),
    }
}

fn log_json(l: &LogLine) -> Value {
    json!({"level": l.level.to_string(), "source": format!("{:?}", l.source).to_lowercase(), "message": l.message})
}

pub(super) fn run(args: TestArgs) -> Result<ExitCode> {
    let runtime = Runtime::new(EngineConfig {
        max_instances: 4,
        ..EngineConfig::default()
    })?;
    let plugin = load(&runtime, &args.plugin)?;
    // An author trying a plugin wants to see its logs: no rate limit, a generous per-record cap.
    let limits = Limits {
        max_log_lines_per_second: 0,
        max_log_lines_per_record: 256,
        ..args.limits.limits()
    };
    let mut inst = plugin.instance(limits)?;
    let inputs = read_inputs(&args)?;
    let color = std::io::stdout().is_terminal() && !args.json;
    let (red, green, yellow, dim, reset) = if color {
        ("\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[2m", "\x1b[0m")
    } else {
        ("", "", "", "", "")
    };
    let mut out = std::io::stdout().lock();
    let (mut accepted, mut rejected, mut failed, mut outputs) = (0u64, 0u64, 0u64, 0u64);
    let (mut fuel, mut time) = (0u64, Duration::ZERO);
    for input in &inputs {
        let p = process(&mut inst, input);
        fuel += p.fuel_used;
        time += p.elapsed;
        if args.json {
            let mut v = json!({
                "offset": input.offset,
                "fuel": p.fuel_used,
                "micros": p.elapsed.as_secs_f64() * 1e6,
                "logs": p.logs.iter().map(log_json).collect::<Vec<_>>(),
                "logs_dropped": p.logs_dropped,
            });
            match &p.result {
                Ok(Verdict::Accepted(o)) => {
                    v["verdict"] = json!("accepted");
                    v["outputs"] = o.iter().map(output_json).collect();
                }
                Ok(Verdict::Rejected { reason }) => {
                    v["verdict"] = json!("rejected");
                    v["reason"] = json!(reason);
                }
                Err(e) => {
                    v["verdict"] = json!("failed");
                    v["error_kind"] = json!(e.kind());
                    v["error"] = json!(e.to_string());
                }
            }
            writeln!(out, "{v}")?;
        } else {
            let head = format!(
                "record {} {dim}(fuel {}, {:.1} µs){reset}",
                input.offset,
                p.fuel_used,
                p.elapsed.as_secs_f64() * 1e6
            );
            match &p.result {
                Ok(Verdict::Accepted(o)) => {
                    writeln!(out, "{head}: {green}accepted{reset}, {} output(s)", o.len())?
                }
                Ok(Verdict::Rejected { reason }) => {
                    writeln!(out, "{head}: {yellow}rejected{reset}: {reason}")?
                }
                Err(e) => writeln!(out, "{head}: {red}FAILED [{}]{reset} {e}", e.kind())?,
            }
            if let Ok(Verdict::Accepted(o)) = &p.result {
                for o in o {
                    match o {
                        Output::Point(pt) => writeln!(out, "  point     {}", pt.line())?,
                        Output::Document(d) => writeln!(
                            out,
                            "  document  {}{}  {}",
                            d.index(),
                            d.id().map(|id| format!(" id={id}")).unwrap_or_default(),
                            d.body()
                        )?,
                    }
                }
            }
            for l in &p.logs {
                writeln!(
                    out,
                    "  {dim}log {:<5} {:?}{reset} {}",
                    l.level, l.source, l.message
                )?;
            }
            if p.logs_dropped > 0 {
                writeln!(out, "  {dim}({} log lines dropped){reset}", p.logs_dropped)?;
            }
        }
        match &p.result {
            Ok(Verdict::Accepted(o)) => {
                accepted += 1;
                outputs += o.len() as u64;
            }
            Ok(Verdict::Rejected { .. }) => rejected += 1,
            Err(_) => failed += 1,
        }
    }
    let n = inputs.len().max(1) as f64;
    let summary = format!(
        "{} record(s): {accepted} accepted ({outputs} outputs), {rejected} rejected, {failed} failed; \
         mean fuel {:.0}, mean time {:.1} µs; plugin {} ({})",
        inputs.len(),
        fuel as f64 / n,
        time.as_secs_f64() * 1e6 / n,
        plugin.digest(),
        plugin.contract()
    );
    if args.json {
        eprintln!("{summary}");
    } else {
        writeln!(out, "{summary}")?;
    }
    let bad = failed > 0 || (args.fail_on_reject && rejected > 0);
    Ok(if bad { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
