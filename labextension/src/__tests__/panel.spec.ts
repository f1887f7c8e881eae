/**
 * The MLOps panel without a server: a tracked job's card (status words, steps, gates, links,
 * every word translated), and its poll's life: started when shown, backing off while the
 * server does not answer, stopped when hidden, gone when disposed.
 */
import { Widget } from '@lumino/widgets';

import { parseJob } from '../models';
import { FAST_MS, MAX_MS, MlopsPanel, SLOW_MS } from '../panel';
import { markingBundle, plain, untranslated } from './translation';

const RUNNING = parseJob({
  id: 'job-1',
  action: 'promote',
  status: 'RUNNING',
  path: 'notebooks/quickstart.ipynb',
  model: 'quickstart',
  steps: {
    prepare: { status: 'SUCCEEDED', duration: 1.25, cached: true },
    train: { status: 'RUNNING' }
  }
});

const PROMOTED = parseJob({
  ...RUNNING,
  status: 'PROMOTED',
  steps: {
    prepare: { status: 'SUCCEEDED', duration: 1.25 },
    train: { status: 'FAILED', error: 'ValueError: <b>bad</b>' }
  },
  gates: [
    {
      gate: 'metric:accuracy',
      verdict: 'PASS',
      measured: 0.97,
      expected: '>= 0.5',
      detail: 'ok'
    }
  ],
  model_version: '2',
  run_id: 'r1',
  links: { run: '#/runs/r1', model_version: '#/models/quickstart/versions/2' },
  log_tail: ['step train done']
});

/** The panel's poll (private: the tests watch its state, never drive it). */
function pollOf(panel: MlopsPanel) {
  return panel['poll'];
}

describe('MlopsPanel job cards', () => {
  it('shows a running job with its steps and a Cancel button', () => {
    const panel = new MlopsPanel(plain);
    panel.track(RUNNING);
    const card = panel.node.querySelector('.nbm-job') as HTMLElement;
    expect(card.dataset.status).toBe('RUNNING');
    const steps = Array.from(card.querySelectorAll('.nbm-steps li')).map(li => [
      li.getAttribute('data-step'),
      li.getAttribute('data-status'),
      li.textContent
    ]);
    expect(steps).toEqual([
      ['prepare', 'SUCCEEDED', 'SUCCEEDED prepare (cached) 1.3 s'],
      ['train', 'RUNNING', 'RUNNING train']
    ]);
    expect(card.querySelector('.nbm-cancel')).not.toBeNull();
    panel.dispose();
  });

  it('shows a finished job with its gate table and links into MLflow', () => {
    const panel = new MlopsPanel(plain);
    panel.setModel('', 'http://127.0.0.1:5000');
    panel.track(PROMOTED);
    const card = panel.node.querySelector('.nbm-job') as HTMLElement;
    const gate = Array.from(card.querySelectorAll('.nbm-gates tbody td')).map(
      td => td.textContent
    );
    expect(gate).toEqual(['metric:accuracy', 'PASS', '0.9700', '>= 0.5', 'ok']);
    const links = Array.from(card.querySelectorAll('a')).map(a => a.href);
    expect(links).toEqual([
      'http://127.0.0.1:5000/#/runs/r1',
      'http://127.0.0.1:5000/#/models/quickstart/versions/2'
    ]);
    expect(card.querySelector('.nbm-cancel')).toBeNull();
    expect(card.querySelector('b')).toBeNull(); // the step error stays text
    panel.dispose();
  });

  it('puts the newest tracked job first, once', () => {
    const panel = new MlopsPanel(plain);
    panel.track(RUNNING);
    panel.track(parseJob({ ...RUNNING, id: 'job-2' }));
    panel.track(PROMOTED);
    const ids = Array.from(panel.node.querySelectorAll('.nbm-job')).map(
      card => (card as HTMLElement).dataset.jobId
    );
    expect(ids).toEqual(['job-1', 'job-2']);
    panel.dispose();
  });

  it('translates every word it shows; data stays as sent', () => {
    const panel = new MlopsPanel(markingBundle());
    expect(untranslated(panel.node, [])).toEqual([]);
    panel.setModel('', 'http://127.0.0.1:5000');
    panel.track(RUNNING);
    panel.track(PROMOTED);
    const data = [
      'notebooks/quickstart.ipynb',
      'quickstart',
      'prepare',
      'train',
      'ValueError: <b>bad</b>',
      'metric:accuracy',
      '0.9700',
      '>= 0.5',
      'ok',
      'step train done'
    ];
    expect(untranslated(panel.node, data)).toEqual([]);
    panel.dispose();
  });
});

describe('MlopsPanel polling', () => {
  it('polls fast while a job is active, slowly otherwise', () => {
    const panel = new MlopsPanel(plain);
    expect(pollOf(panel).frequency.interval).toBe(SLOW_MS);
    panel.track(RUNNING);
    expect(pollOf(panel).frequency.interval).toBe(FAST_MS);
    panel.track(PROMOTED);
    expect(pollOf(panel).frequency.interval).toBe(SLOW_MS);
    panel.dispose();
  });

  it('starts when shown, backs off while the server does not answer, stops when hidden, ends when disposed', async () => {
    const panel = new MlopsPanel(plain);
    const poll = pollOf(panel);
    expect(poll.state.phase).toBe('constructed');
    Widget.attach(panel, document.body);
    // no Jupyter server answers in this test: the tick fails and the panel says why
    await poll.tick;
    await poll.tick;
    expect(poll.state.phase).toBe('rejected');
    expect(poll.frequency).toEqual({
      backoff: true,
      interval: SLOW_MS,
      max: MAX_MS
    });
    expect(panel.node.querySelector('.nbm-error')?.textContent).toMatch(
      /^Cannot reach the Jupyter server: /
    );
    panel.hide();
    expect(poll.state.phase).toBe('stopped');
    panel.show();
    expect(['started', 'rejected']).toContain(poll.state.phase);
    Widget.detach(panel);
    panel.dispose();
    expect(poll.isDisposed).toBe(true);
  });
});
