import pino, { type DestinationStream } from 'pino';

/** Where a turn's lines go: pino's asynchronous destination (sonic-boom), or a test's. */
export interface AsyncLines {
  write(text: string): unknown;
  /** Writes what it still holds, synchronously. */
  flushSync(): void;
}

/**
 * The log's lines of one turn of the event loop, handed to `sink` as one string when the turn ends
 * (`setImmediate`), after `transform` (the token filter) has run over them once.
 *
 * Why not line by line: sonic-boom, while a write is in flight, appends each new line to the text
 * still waiting and measures that whole text again (`Buffer.byteLength` of up to 16 KB, flattening
 * it) for every line. Under load that was 8% of a saturated `GET /v1/runs/{id}`'s CPU profile, more
 * than the line's own formatting (bench/RESULTS.md, issue 14, seventeenth pass). Handed a turn's
 * lines at once, it measures once a turn.
 *
 * Lines still held when the process exits (a `process.exit()`, an uncaught error) are written
 * synchronously, after what `sink` holds, by a destination `atExit` makes then: handed to `sink`,
 * they would start an asynchronous write that the exit does not wait for.
 */
export class TurnBatchedLines implements DestinationStream {
  private held: string[] = [];

  constructor(
    private readonly sink: AsyncLines,
    private readonly transform: (text: string) => string,
    private readonly atExit: () => { write(text: string): unknown },
  ) {
    process.prependListener('exit', this.flushAtExit);
  }

  write(line: string): void {
    if (this.held.push(line) === 1) setImmediate(this.flush);
  }

  private take(): string | undefined {
    if (this.held.length === 0) return undefined;
    const text = this.held.length === 1 ? this.held[0]! : this.held.join('');
    this.held = [];
    return this.transform(text);
  }

  private readonly flush = (): void => {
    const text = this.take();
    if (text !== undefined) this.sink.write(text);
  };

  private readonly flushAtExit = (): void => {
    const text = this.take();
    if (text === undefined) return;
    this.sink.flushSync();
    this.atExit().write(text);
  };
}

/** Standard output, written asynchronously by sonic-boom a turn's lines at a time, each turn's text passed through `transform`. */
export function stdoutLines(transform: (text: string) => string): TurnBatchedLines {
  return new TurnBatchedLines(pino.destination({ dest: 1, sync: false }), transform, () => pino.destination({ dest: 1, sync: true }));
}
