/**
 * Monitoring in the panel without a server: the reply's checks, the chart's geometry, which
 * verdicts are new, and the section itself (latest verdict, chart, Retrain now, notifications,
 * every word translated).
 */
import { IJob, parseJob } from '../models';
import { MonitorSection, RetrainForm } from '../monitor';
import {
  chartGeometry,
  IMonitorView,
  isSnapshotRef,
  newAlarms,
  parseMonitor,
  retrainRuns
} from '../monitorModels';
import { markingBundle, plain, untranslated } from './translation';

function check(id: string, verdict: string, share: number, extra = {}) {
  return {
    id,
    at: `2026-12-0${id.length}T10:00:00Z`,
    version: '1',
    verdict,
    data: `batch@v${id.length}`,
    reference: 'train@v1',
    share,
    drifted: verdict === 'ok' ? [] : ['x'],
    decay: null,
    actions: [],
    ...extra
  };
}

const REPLY = {
  model: 'churn',
  champion: { version: '1', run_id: 'r0' },
  latest: check('cc', 'drift', 0.75),
  checks: [check('c', 'ok', 0), check('cc', 'drift', 0.75)]
};

describe('parseMonitor', () => {
  it('keeps well-formed checks and drops torn ones', () => {
    const view = parseMonitor({
      ...REPLY,
      checks: [...REPLY.checks, { verdict: 'ok' }, 'nope', { id: 'x' }]
    });
    expect(view.checks.map(c => [c.id, c.verdict, c.share])).toEqual([
      ['c', 'ok', 0],
      ['cc', 'drift', 0.75]
    ]);
    expect(view.champion).toEqual({ version: '1', run_id: 'r0' });
    expect(view.latest?.id).toBe('cc');
  });

  it('clamps shares and reads actions and decay', () => {
    const view = parseMonitor({
      model: 'churn',
      champion: null,
      latest: null,
      checks: [
        check('c', 'decay', 3, {
          decay: { worst: 0.2, decayed: true },
          actions: [{ name: 'retrain', status: 'done', run_id: 'r9' }, 1]
        }),
        check('cc', 'ok', Number.NaN)
      ]
    });
    expect(view.checks.map(c => c.share)).toEqual([1, 0]);
    expect(view.checks[0].decay).toEqual({ worst: 0.2, decayed: true });
    expect(retrainRuns(view.checks[0])).toEqual(['r9']);
    expect(view.champion).toBeNull();
  });

  it('refuses a reply that is not the monitoring shape', () => {
    expect(() => parseMonitor([])).toThrow('not a JSON object');
    expect(() => parseMonitor({ checks: {} })).toThrow('"checks"');
  });
});

describe('chartGeometry', () => {
  const checks = parseMonitor({
    ...REPLY,
    checks: [
      check('c', 'ok', 0),
      check('cc', 'drift', 1),
      check('ccc', 'ok', 0.5)
    ]
  }).checks;

  it('spreads the checks evenly and puts the share on the y axis', () => {
    const g = chartGeometry(checks, 100, 50, 5);
    expect(g.points.map(p => [p.x, p.y])).toEqual([
      [5, 45],
      [50, 5],
      [95, 25]
    ]);
    expect(g.path).toBe('M5 45 L50 5 L95 25');
  });

  it('centres a single check and draws nothing without checks', () => {
    expect(chartGeometry(checks.slice(0, 1), 100, 50, 5).points[0].x).toBe(50);
    const empty = chartGeometry([], 100, 50, 5);
    expect([empty.points, empty.path]).toEqual([[], '']);
  });

  it('keeps every point inside the box', () => {
    const many = Array.from({ length: 40 }, (_, i) => ({
      ...checks[0],
      id: String(i),
      share: (i % 7) / 6
    }));
    for (const p of chartGeometry(many, 240, 72, 6).points) {
      expect(p.x).toBeGreaterThanOrEqual(6);
      expect(p.x).toBeLessThanOrEqual(234);
      expect(p.y).toBeGreaterThanOrEqual(6);
      expect(p.y).toBeLessThanOrEqual(66);
    }
  });
});

describe('newAlarms and snapshot references', () => {
  it('announces only checks that appeared and did not say ok', () => {
    const before = parseMonitor({ ...REPLY, checks: [check('c', 'ok', 0)] });
    const after = parseMonitor({
      ...REPLY,
      checks: [
        check('c', 'ok', 0),
        check('cc', 'drift', 1),
        check('ccc', 'ok', 0)
      ]
    });
    expect(newAlarms(before, after).map(c => c.id)).toEqual(['cc']);
    expect(newAlarms(null, after)).toEqual([]);
    expect(newAlarms({ ...before, model: 'other' }, after)).toEqual([]);
  });

  it('takes NAME@vN and nothing else', () => {
    expect(isSnapshotRef('batch@v3')).toBe(true);
    for (const bad of [
      'batch',
      'batch@3',
      'batch@v3\n',
      '../x@v1',
      '',
      'a@v'
    ]) {
      expect(isSnapshotRef(bad)).toBe(false);
    }
  });
});

function retrainJob(status: string, extra = {}): IJob {
  return parseJob({
    id: 'job-r',
    action: 'retrain',
    status,
    path: null,
    model: 'churn',
    data: 'batch@v2',
    ...extra
  });
}

function section(views: IMonitorView[], trans = plain) {
  const notes: [string, string][] = [];
  const jobs: IJob[] = [];
  const posted: unknown[] = [];
  let clock = 0;
  let reads = 0;
  const monitor = new MonitorSection(trans, job => jobs.push(job), {
    getMonitor: () =>
      Promise.resolve(views[Math.min(reads++, views.length - 1)]),
    retrain: (model, data, promote) => {
      posted.push([model, data, promote]);
      return Promise.resolve(retrainJob('QUEUED'));
    },
    notify: (kind, message) => notes.push([kind, message]),
    now: () => clock
  });
  return {
    monitor,
    notes,
    jobs,
    posted,
    tick: (ms: number) => (clock += ms)
  };
}

describe('MonitorSection', () => {
  const first = parseMonitor(REPLY);

  it('shows the latest verdict and one chart point per check', async () => {
    const { monitor } = section([first]);
    await monitor.setModel('churn');
    const latest = monitor.node.querySelector('.nbm-latest') as HTMLElement;
    expect(latest.dataset.verdict).toBe('drift');
    expect(latest.textContent).toContain('DRIFT');
    expect(latest.textContent).toContain('75%');
    const dots = Array.from(monitor.node.querySelectorAll('circle'));
    expect(dots.map(d => d.getAttribute('data-verdict'))).toEqual([
      'ok',
      'drift'
    ]);
    expect(monitor.node.querySelector('circle title')?.textContent).toContain(
      'batch@v1'
    );
    expect(monitor.node.querySelector('.nbm-retrain')).not.toBeNull();
  });

  it('says so when the champion was never checked', async () => {
    const { monitor } = section([{ ...first, latest: null, checks: [] }]);
    await monitor.setModel('churn');
    expect(monitor.node.querySelector('.nbm-latest')?.textContent).toContain(
      'No check'
    );
    expect(monitor.node.querySelector('svg')).toBeNull();
  });

  it('notifies a new drift verdict once, not the ones it found at first', async () => {
    const later = parseMonitor({
      ...REPLY,
      checks: [...REPLY.checks, check('ccc', 'drift', 0.5)]
    });
    const { monitor, notes, tick } = section([first, later]);
    await monitor.setModel('churn');
    expect(notes).toEqual([]);
    await monitor.update([]); // too soon: not read again
    tick(60000);
    await monitor.update([]);
    expect(notes).toHaveLength(1);
    expect(notes[0][0]).toBe('warning');
    expect(notes[0][1]).toContain('batch@v3');
    tick(60000);
    await monitor.update([]);
    expect(notes).toHaveLength(1);
  });

  it('retrains on the snapshot asked for and announces the job end', async () => {
    const { monitor, notes, jobs, posted } = section([first]);
    await monitor.setModel('churn');
    const job = await monitor.retrainNow(form => {
      expect(form.getValue()).toEqual({ data: 'batch@v2', promote: true });
      form.dataInput.value = ' batch@v7 ';
      return Promise.resolve(form.getValue());
    });
    expect(job?.id).toBe('job-r');
    expect(posted).toEqual([['churn', 'batch@v7', true]]);
    expect(jobs.map(j => j.id)).toEqual(['job-r']);
    await monitor.update([retrainJob('RUNNING')]);
    expect(notes).toEqual([]);
    await monitor.update([retrainJob('PROMOTED', { run_id: 'r5' })]);
    expect(notes).toHaveLength(1);
    expect(notes[0][0]).toBe('success');
    expect(notes[0][1]).toContain('r5');
    await monitor.update([retrainJob('PROMOTED')]);
    expect(notes).toHaveLength(1);
  });

  it('refuses a malformed snapshot before posting, and reports a failed job', async () => {
    const { monitor, notes, posted } = section([first]);
    await monitor.setModel('churn');
    await monitor.retrainNow(() =>
      Promise.resolve({ data: 'batch', promote: false })
    );
    expect(posted).toEqual([]);
    expect(monitor.node.querySelector('.nbm-error')?.textContent).toContain(
      'NAME@vN'
    );
    expect(await monitor.retrainNow(() => Promise.resolve(null))).toBeNull();
    await monitor.retrainNow(() =>
      Promise.resolve({ data: 'batch@v1', promote: false })
    );
    await monitor.update([retrainJob('FAILED', { error: 'no pipeline' })]);
    expect(notes).toEqual([['error', expect.stringContaining('no pipeline')]]);
  });

  it('translates every word it shows', async () => {
    const trans = markingBundle();
    const { monitor } = section([first], trans);
    await monitor.setModel('churn');
    const form = new RetrainForm('churn', 'batch@v2', trans);
    const data = ['churn', 'batch@v1', 'batch@v2', '1', '75%'];
    data.push(...first.checks.map(c => c.at));
    expect(untranslated(monitor.node, data)).toEqual([]);
    expect(untranslated(form.node, data)).toEqual([]);
  });
});
