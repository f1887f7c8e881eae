/**
 * Test helpers: a translation bundle that marks every string it returns, so a test can tell
 * text that went through `trans.__()` from text that did not.
 */
import { nullTranslator, TranslationBundle } from '@jupyterlab/translation';

export const OPEN = '«';
export const CLOSE = '»';

/** The plain bundle the extension uses when JupyterLab has no translator. */
export const plain: TranslationBundle = nullTranslator.load('nb_mlops');

/** A bundle whose every answer is the plain answer wrapped in « ». */
export function markingBundle(): TranslationBundle {
  const mark = (text: string) => `${OPEN}${text}${CLOSE}`;
  type Args = unknown[];
  return {
    __: (msgid: string, ...args: Args) => mark(plain.__(msgid, ...args)),
    _n: (msgid: string, plural: string, n: number, ...args: Args) =>
      mark(plain._n(msgid, plural, n, ...args)),
    _p: (ctx: string, msgid: string, ...args: Args) =>
      mark(plain._p(ctx, msgid, ...args)),
    _np: (
      ctx: string,
      msgid: string,
      plural: string,
      n: number,
      ...args: Args
    ) => mark(plain._np(ctx, msgid, plural, n, ...args)),
    gettext: (msgid: string, ...args: Args) =>
      mark(plain.gettext(msgid, ...args)),
    ngettext: (msgid: string, plural: string, n: number, ...args: Args) =>
      mark(plain.ngettext(msgid, plural, n, ...args)),
    pgettext: (ctx: string, msgid: string, ...args: Args) =>
      mark(plain.pgettext(ctx, msgid, ...args)),
    npgettext: (
      ctx: string,
      msgid: string,
      plural: string,
      n: number,
      ...args: Args
    ) => mark(plain.npgettext(ctx, msgid, plural, n, ...args)),
    dcnpgettext: (
      domain: string,
      ctx: string,
      msgid: string,
      plural: string,
      n: number,
      ...args: Args
    ) => mark(plain.dcnpgettext(domain, ctx, msgid, plural, n, ...args))
  };
}

/**
 * The user-visible strings of `node` (text nodes and the attributes people read) that are
 * neither translated nor one of the `data` strings (names and values from the server).
 */
export function untranslated(node: HTMLElement, data: string[]): string[] {
  const known = new Set(data);
  const found: string[] = [];
  const check = (text: string) => {
    const trimmed = text.trim();
    const bare = trimmed.replace(/«[^«»]*»/g, '');
    // separators and arrows are not words; data may sit next to translated words
    if (/^[\s·:→\-—()[\]]*$/.test(bare) || known.has(trimmed)) {
      return;
    }
    if (bare.split(/[\s·→]+/).every(part => part === '' || known.has(part))) {
      return;
    }
    found.push(trimmed);
  };
  const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
  for (let text = walker.nextNode(); text; text = walker.nextNode()) {
    check(text.textContent ?? '');
  }
  for (const element of Array.from(node.querySelectorAll('*'))) {
    for (const attribute of ['aria-label', 'placeholder', 'title']) {
      const value = element.getAttribute(attribute);
      if (value !== null) {
        check(value);
      }
    }
  }
  return found;
}
