/**
 * The DOM builder only ever makes text: markup in data stays text, event handlers and URLs
 * cannot be set through attributes, and links accept http(s) only.
 */
import { asText, clear, h, link, safeUrl } from '../dom';

describe('h', () => {
  it('inserts strings as text, never as markup', () => {
    const node = h('div', {}, '<img src=x onerror=alert(1)>', 3, null, false);
    expect(node.querySelector('img')).toBeNull();
    expect(node.textContent).toBe('<img src=x onerror=alert(1)>3');
  });

  it('drops event handlers and URLs given as attributes', () => {
    const node = h('a', {
      onclick: 'alert(1)',
      href: 'javascript:alert(1)',
      src: 'x',
      title: 'kept',
      hidden: true,
      skipped: undefined
    });
    expect(node.getAttributeNames().sort()).toEqual(['hidden', 'title']);
  });

  it('clears a node', () => {
    const node = h('ul', {}, h('li', {}, 'a'), h('li', {}, 'b'));
    clear(node);
    expect(node.childNodes.length).toBe(0);
  });
});

describe('links', () => {
  it.each([
    ['https://mlflow.example/#/runs/1', 'https://mlflow.example/#/runs/1'],
    ['http://127.0.0.1:5000/', 'http://127.0.0.1:5000/'],
    ['javascript:alert(1)', null],
    ['data:text/html,<b>x</b>', null],
    ['/relative', null]
  ])('accepts %s as %s', (url, safe) => {
    expect(safeUrl(url)).toBe(safe);
  });

  it('makes a new-tab anchor for http(s), plain text otherwise', () => {
    const good = link(
      'run',
      'https://mlflow.example/#/runs/1'
    ) as HTMLAnchorElement;
    expect(good.tagName).toBe('A');
    expect(good.rel).toBe('noopener noreferrer');
    const bad = link('run', 'javascript:alert(1)');
    expect(bad.tagName).toBe('SPAN');
    expect(bad.textContent).toBe('run');
  });
});

describe('asText', () => {
  it.each([
    [null, '—'],
    [undefined, '—'],
    [3, '3'],
    [0.123456, '0.1235'],
    ['x', 'x'],
    [{ a: [1] }, '{"a":[1]}'],
    [() => 1, '—']
  ])('shows %p as %s', (value, text) => {
    expect(asText(value)).toBe(text);
  });
});
