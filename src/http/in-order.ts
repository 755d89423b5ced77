/**
 * A stream filtered by an answer that may take a read (whose is this session, this run?), delivered
 * in the order it came: `decide` is asked at once, as each item arrives, and an item whose answer is
 * pending holds back those after it, so a later item whose answer was known already cannot overtake.
 * Feed items to `accept`; after `stop`, nothing more is delivered.
 */
export function inOrderWhere<T>(decide: (item: T) => Promise<boolean>, deliver: (item: T) => void): { accept: (item: T) => void; stop: () => void } {
  let inOrder = Promise.resolve();
  let stopped = false;
  return {
    accept: (item) => {
      const decided = decide(item);
      inOrder = inOrder.then(async () => {
        if ((await decided) && !stopped) deliver(item);
      });
    },
    stop: () => void (stopped = true),
  };
}
