/**
 * A tiny DOM builder that only ever inserts text: strings become text nodes, never HTML, and
 * links are accepted only with an http(s) URL, so `<img onerror=…>` or `javascript:` stay inert.
 */

export type Child = Node | string | number | null | undefined | false;

export function h(
  tag: string,
  attrs: { [name: string]: string | boolean | undefined } = {},
  ...children: Child[]
): HTMLElement {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) {
      continue;
    }
    if (name.startsWith('on') || name === 'href' || name === 'src') {
      // Event handlers and URLs never come from here: see link().
      continue;
    }
    node.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    node.appendChild(
      typeof child === 'string' || typeof child === 'number'
        ? document.createTextNode(String(child))
        : child
    );
  }
  return node;
}

/** A safe absolute http(s) URL, or null. */
export function safeUrl(url: string): string | null {
  try {
    const parsed = new URL(url);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:'
      ? parsed.href
      : null;
  } catch {
    return null;
  }
}

/** An anchor opening `url` in a new tab; plain text when the URL is not http(s). */
export function link(text: string, url: string): HTMLElement {
  const safe = safeUrl(url);
  if (safe === null) {
    return h('span', { class: 'nbm-muted' }, text);
  }
  const a = h('a', { target: '_blank', rel: 'noopener noreferrer' }, text);
  (a as HTMLAnchorElement).href = safe;
  return a;
}

/** Render any JSON-like value as short text (never as markup). */
export function asText(value: unknown): string {
  if (value === null || value === undefined) {
    return '—';
  }
  if (typeof value === 'number') {
    return Number.isInteger(value) ? String(value) : value.toPrecision(4);
  }
  if (typeof value === 'string') {
    return value;
  }
  try {
    return JSON.stringify(value) ?? '—'; // undefined for a function or a symbol
  } catch {
    return '—'; // a cycle or a bigint: never in JSON from the server
  }
}

export function clear(node: HTMLElement): void {
  while (node.firstChild) {
    node.removeChild(node.firstChild);
  }
}
