/**
 * Strings in code-unit order: the same in every process whatever its locale (localeCompare is
 * not), so that what one process sorts another finds in the same order.
 */
export function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
