/**
 * "Did you mean" for misspelt keys.
 *
 * @module
 */

function levenshtein(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length];
}

/** ` (did you mean "x"?)` when one of `known` is close to `key`, else "". */
export function didYouMean(key: string, known: string[]): string {
  let best = "";
  let bestScore = Infinity;
  for (const k of known) {
    const d = levenshtein(key.toLowerCase(), k);
    if (d < bestScore) [best, bestScore] = [k, d];
  }
  return bestScore <= Math.max(2, Math.floor(key.length / 3)) ? ` (did you mean "${best}"?)` : "";
}
