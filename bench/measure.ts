import type { RawSmtpClient } from '../test/helpers/smtp-client.ts';
import { closeSessions, openSessions, runLoad, type LoadTarget, type MessageTiming } from './load.ts';
import type { SinkProcess } from './sink.ts';
import { ascending, CpuMeter, nowMs, percentile } from './stats.ts';

/** What one run (one server, one message size) produced. */
export interface RunResult {
  label: string;
  size: number;
  sessions: number;
  /** Measured messages (warm-up excluded). */
  sent: number;
  accepted: number;
  refused: number;
  /** Accepted messages per second: first MAIL FROM to last 250. */
  acceptedPerSecond: number;
  /** Final dot written → 250, ms. */
  ackP50: number;
  ackP99: number;
  /** Whole transaction (MAIL FROM written → 250), ms. */
  txnP50: number;
  delivered: number;
  /** Delivered messages per second: first MAIL FROM to last arrival at the sink. */
  deliveredPerSecond: number;
  /** MAIL FROM written → arrival at the sink, ms. */
  e2eP50: number;
  e2eP99: number;
  /** Cores used per process group while the measured messages were submitted and delivered. */
  cpu: Record<string, number>;
  /** Share of the machine's CPU time that was busy over the same window (0..1). */
  machineBusy: number;
  /** Share of the machine's CPU time the hypervisor gave to other guests (0..1). */
  machineSteal: number;
  /** Start and end of the measured window (nowMs clock): first MAIL FROM, last arrival. */
  window: { start: number; end: number };
  loopDelay?: LoopDelay;
}

export interface RunOptions {
  label: string;
  target: LoadTarget;
  sink: SinkProcess;
  sessions: number;
  size: number;
  warmup: number;
  count: number;
  from: string;
  to: string;
  /** Process groups to meter (name → CPU seconds so far). */
  cpu: Record<string, () => number | undefined>;
  /** Longest wait for the last deliveries after the last 250 (ms). */
  drainTimeoutMs: number;
  /** Progress lines go here (stderr). */
  progress: (line: string) => void;
  /** Called when the measured window starts and ends; what 'end' returns is the loop delay. */
  onWindow?: (edge: 'start' | 'end') => Promise<LoopDelay | undefined>;
}

/** The server's event-loop delay over the window (ms), when it was probed (bench/loop-probe.ts). */
export interface LoopDelay {
  p50: number;
  p99: number;
  max: number;
  mean: number;
}

/** Waits until every id of `wanted` has arrived at the sink; returns id → arrival time. */
async function awaitArrivals(
  sink: SinkProcess,
  wanted: Set<string>,
  timeoutMs: number,
): Promise<Map<string, number>> {
  const arrived = new Map<string, number>();
  const deadline = nowMs() + timeoutMs;
  for (;;) {
    const batch = await sink.collect();
    batch.ids.forEach((id, i) => {
      if (wanted.has(id) && !arrived.has(id)) arrived.set(id, batch.times[i]!);
    });
    if (arrived.size >= wanted.size || nowMs() > deadline) return arrived;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * One run: opens the sessions, sends the warm-up and waits for its delivery (so the measured
 * messages start on an empty queue), then sends the measured messages and waits for them at the
 * sink.
 */
export async function measureRun(opts: RunOptions): Promise<RunResult> {
  const runId = `${opts.label.replace(/\W+/g, '-')}-${opts.size}-${Date.now().toString(36)}`;
  const sessions: RawSmtpClient[] = await openSessions(opts.target, opts.sessions);
  try {
    await opts.sink.collect(); // forget earlier arrivals
    if (opts.warmup > 0) {
      const warm = await runLoad(sessions, {
        count: opts.warmup,
        size: opts.size,
        idPrefix: `${runId}-warmup`,
        from: opts.from,
        to: opts.to,
      });
      const acked = new Set(warm.filter((t) => t.code === 250).map((t) => t.id));
      if (acked.size === 0) {
        const codes = [...new Set(warm.map((t) => t.code))].join(', ');
        throw new Error(`${opts.label}: warm-up messages all refused (replies ${codes})`);
      }
      const arrived = await awaitArrivals(opts.sink, acked, opts.drainTimeoutMs);
      if (arrived.size < acked.size) {
        throw new Error(`${opts.label}: only ${arrived.size}/${acked.size} warm-up messages delivered`);
      }
    }
    const meter = new CpuMeter(opts.cpu);
    meter.begin();
    await opts.onWindow?.('start');
    const timings: MessageTiming[] = await runLoad(sessions, {
      count: opts.count,
      size: opts.size,
      idPrefix: runId,
      from: opts.from,
      to: opts.to,
    });
    const acked = timings.filter((t) => t.code === 250);
    opts.progress(
      `${opts.label} ${opts.size} B: ${acked.length}/${timings.length} accepted, waiting for delivery`,
    );
    const arrivals = await awaitArrivals(opts.sink, new Set(acked.map((t) => t.id)), opts.drainTimeoutMs);
    const usage = meter.end();
    const loopDelay = await opts.onWindow?.('end');

    const start = Math.min(...timings.map((t) => t.submitAt));
    const lastAck = Math.max(...acked.map((t) => t.ackAt));
    const lastArrival = arrivals.size > 0 ? Math.max(...arrivals.values()) : NaN;
    const ack = ascending(acked.map((t) => t.ackAt - t.dotAt));
    const txn = ascending(acked.map((t) => t.ackAt - t.submitAt));
    const e2e = ascending(
      acked.filter((t) => arrivals.has(t.id)).map((t) => arrivals.get(t.id)! - t.submitAt),
    );
    return {
      label: opts.label,
      size: opts.size,
      sessions: opts.sessions,
      sent: timings.length,
      accepted: acked.length,
      refused: timings.length - acked.length,
      acceptedPerSecond: acked.length / ((lastAck - start) / 1000),
      ackP50: percentile(ack, 50),
      ackP99: percentile(ack, 99),
      txnP50: percentile(txn, 50),
      delivered: arrivals.size,
      deliveredPerSecond: arrivals.size / ((lastArrival - start) / 1000),
      e2eP50: percentile(e2e, 50),
      e2eP99: percentile(e2e, 99),
      cpu: usage.cores,
      machineBusy: usage.machineBusy,
      machineSteal: usage.machineSteal,
      window: { start, end: Number.isFinite(lastArrival) ? lastArrival : lastAck },
      ...(loopDelay ? { loopDelay } : {}),
    };
  } finally {
    await closeSessions(sessions);
  }
}
