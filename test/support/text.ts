/** Text as evaluations print it: lines of numbers and words, repetitive but not constant. `bytes` long. */
export function textOutput(bytes: number): Buffer {
  const lines: string[] = [];
  let size = 0;
  for (let i = 0; size < bytes; i += 1) {
    const line = `step=${i} loss=${(1 / (i + 1)).toFixed(6)} accuracy=${(i % 97) / 97} status=ok\n`;
    lines.push(line);
    size += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, bytes);
}
