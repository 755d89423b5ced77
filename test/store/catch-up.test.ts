/** CatchUpCursor on its own, against a log held in an array (the stores and the HTTP replay run it end to end). */
import { describe, expect, it } from 'vitest';
import type { AsmEvent } from '../../src/schemas/events.js';
import { CatchUpCursor, type CatchUpOptions, type Phase } from '../../src/store/catch-up.js';

function event(seq: number): AsmEvent {
  return { seq, session_id: 'ses_1', run_id: 'run_1', kind: 'stderr', payload: { content: `${seq}` } } as unknown as AsmEvent;
}

/** A session's log holding seqs 1..last; `failing` makes every read reject. */
function fakeLog(last: number) {
  const log = {
    events: Array.from({ length: last }, (_, i) => event(i + 1)),
    reads: [] as number[],
    failing: false,
    async read(_sessionId: string, opts: { after: number; limit: number }): Promise<AsmEvent[]> {
      if (log.failing) throw new Error('log unreachable');
      log.reads.push(opts.after);
      return log.events.filter((e) => e.seq > opts.after).slice(0, opts.limit);
    },
    async lastSeq(): Promise<number> {
      return log.events.length;
    },
  };
  return log;
}

function follow(log: ReturnType<typeof fakeLog>, opts: Partial<CatchUpOptions> = {}) {
  const delivered: Array<[number, Phase]> = [];
  const cursor = new CatchUpCursor(log, {
    sessionId: 'ses_1',
    after: 0,
    pageSize: 2,
    deliver: (e, phase) => void delivered.push([e.seq, phase]),
    ...opts,
  });
  return { cursor, delivered };
}

describe('CatchUpCursor', () => {
  it('reads the log after its start, page by page, until a short page', async () => {
    const log = fakeLog(5);
    const { cursor, delivered } = follow(log, { after: 1 });
    await cursor.catchUp();
    expect(delivered).toEqual([
      [2, 'replay'],
      [3, 'replay'],
      [4, 'replay'],
      [5, 'replay'],
    ]);
    expect(log.reads).toEqual([1, 3, 5]);
  });

  it('reads the gap before a live event that skips ahead, and drops what it already delivered', async () => {
    const log = fakeLog(6);
    const { cursor, delivered } = follow(log, { after: 1, pageSize: 10 });
    void cursor.live(event(2));
    void cursor.live(event(5));
    await cursor.live(event(6));
    expect(delivered).toEqual([
      [2, 'live'],
      [3, 'replay'],
      [4, 'replay'],
      [5, 'replay'],
      [6, 'replay'],
    ]);
  });

  it('runs its steps in the order they were asked for', async () => {
    const log = fakeLog(3);
    const { cursor, delivered } = follow(log);
    const replayed = cursor.catchUp();
    void cursor.live(event(3));
    void cursor.live(event(4));
    await replayed;
    await cursor.live(event(4));
    expect(delivered.map(([seq]) => seq)).toEqual([1, 2, 3, 4]);
    expect(delivered.at(-1)).toEqual([4, 'live']);
  });

  it('waits for a starting point still being read; without one it starts at the log’s last seq', async () => {
    const known = follow(fakeLog(4), { after: Promise.resolve(2) });
    await known.cursor.catchUp();
    expect(known.delivered.map(([seq]) => seq)).toEqual([3, 4]);

    const unknown = follow(fakeLog(4), { after: Promise.reject(new Error('down')) });
    await unknown.cursor.catchUp();
    await unknown.cursor.live(event(5));
    expect(unknown.delivered).toEqual([[5, 'live']]);

    const liveFirst = follow(fakeLog(4), { after: Promise.reject(new Error('down')) });
    await liveFirst.cursor.live(event(9));
    expect(liveFirst.delivered).toEqual([[9, 'live']]);
  });

  it('with onCatchUpFailure, reports a failed read and still delivers the live event', async () => {
    const log = fakeLog(4);
    const failures: unknown[] = [];
    const { cursor, delivered } = follow(log, { onCatchUpFailure: (err) => failures.push(err) });
    log.failing = true;
    await cursor.live(event(4));
    expect(failures).toHaveLength(1);
    expect(delivered).toEqual([[4, 'live']]);
  });

  it('without onCatchUpFailure, a failed read rejects that step and every later one', async () => {
    const log = fakeLog(4);
    const { cursor, delivered } = follow(log);
    log.failing = true;
    await expect(cursor.catchUp()).rejects.toThrow('log unreachable');
    log.failing = false;
    await expect(cursor.live(event(5))).rejects.toThrow('log unreachable');
    expect(delivered).toEqual([]);
  });

  it('delivers nothing after stop()', async () => {
    const log = fakeLog(4);
    const { cursor, delivered } = follow(log, {
      deliver: (e) => {
        delivered.push([e.seq, 'replay']);
        if (e.seq === 2) cursor.stop();
      },
    });
    await cursor.catchUp();
    await cursor.live(event(5));
    expect(delivered.map(([seq]) => seq)).toEqual([1, 2]);
  });
});
