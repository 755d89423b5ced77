import pino, { type DestinationStream } from 'pino';

/**
 * The log's lines of one turn of the event loop, handed to `sink` as one string when the turn ends
 * (`setImmediate`), after `transform` (the token filter) has run over them once.
 *
 * Why not line by line: sonic-boom, while a write is in flight, appends each new line to the text
 * still waiting and measures that whole text again (`Buffer.byteLength` of up to 16 KB, flattening
 * it) for every line. Under load that was 8% of a `GET /v1/runs/{id}`'s CPU, more than the line's
 * own formatting (bench/RESULTS.md, issue 14, seventeenth pass). Handed a turn's lines at once, it
 * measures once a turn.
 *
 * Lines still held when the process exits (a `process.exit()`, an uncaught error) are handed over
 * first thing at exit, before pino's own exit hook writes what sonic-boom holds synchronously.
 */
export class TurnBatchedLines implements DestinationStream {
  private held: string[] = [];

  constructor(
    private readonly sink: DestinationStream,
    private readonly transform: (text: string) => string,
  ) {
    process.prependListener('exit', this.flush);
  }

  write(line: string): void {
    if (this.held.push(line) === 1) setImmediate(this.flush);
  }

  private readonly flush = (): void => {
    if (this.held.length === 0) return;
    const text = this.held.length === 1 ? this.held[0]! : this.held.join('');
    this.held = [];
    this.sink.write(this.transform(text));
  };
}

/** Standard output, written asynchronously by sonic-boom a turn's lines at a time, each turn's text passed through `transform`. */
export function stdoutLines(transform: (text: string) => string): TurnBatchedLines {
  return new TurnBatchedLines(pino.destination({ dest: 1, sync: false }), transform);
}
