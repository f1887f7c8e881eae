/**
 * The server's replies checked into the client's shapes, and the rules read off them: which
 * jobs are active or just finished, gate verdicts, result links, the words shown for statuses.
 */
import { ApiError, describeError } from '../errors';
import {
  anyActive,
  championVersion,
  gateVerdict,
  IJob,
  isActive,
  JOB_STATUSES,
  justFinished,
  needsDetail,
  parseHistory,
  parseJob,
  parseJobList,
  parseNotebookInfo,
  recentEntries,
  resultLinks,
  ShapeError,
  statusClass,
  statusWord
} from '../models';
import { markingBundle, plain } from './translation';

const JOB = {
  id: '20260101T000000-abcd',
  action: 'promote',
  status: 'RUNNING',
  path: 'notebooks/quickstart.ipynb'
};

function job(id: string, status: string): IJob {
  return parseJob({ ...JOB, id, status });
}

describe('parseJob', () => {
  it('fills what a just-queued job does not have yet', () => {
    const parsed = parseJob(JOB);
    expect(parsed).toMatchObject({
      id: JOB.id,
      action: 'promote',
      status: 'RUNNING',
      model: null,
      run_id: null,
      model_version: null,
      steps: {},
      gates: [],
      links: {},
      log_tail: [],
      error: null
    });
  });

  it('keeps progress, gates and links as sent', () => {
    const parsed = parseJob({
      ...JOB,
      model: 'quickstart',
      steps: { train: { status: 'SUCCEEDED', duration: 1.5 } },
      gates: [{ gate: 'metric:accuracy', verdict: 'PASS' }, 'junk'],
      links: { run: '#/runs/r1', odd: 3 },
      model_version: 2,
      log_tail: ['line 1', 2]
    });
    expect(parsed.steps.train).toEqual({ status: 'SUCCEEDED', duration: 1.5 });
    expect(parsed.gates).toEqual([
      { gate: 'metric:accuracy', verdict: 'PASS' }
    ]);
    expect(parsed.links).toEqual({ run: '#/runs/r1' });
    expect(parsed.model_version).toBe('2');
    expect(parsed.log_tail).toEqual(['line 1', '2']);
  });

  it.each([
    [null, 'job: not a JSON object'],
    [[JOB], 'job: not a JSON object'],
    [{ ...JOB, id: undefined }, 'job: "id" is missing or not a string'],
    [{ ...JOB, status: 3 }, 'job: "status" is missing or not a string'],
    [{ ...JOB, path: '' }, 'job: "path" is missing or not a string'],
    [{ ...JOB, action: 'deploy' }, 'job: unknown action "deploy"']
  ])('refuses %j: %s', (value, message) => {
    expect(() => parseJob(value)).toThrow(ShapeError);
    expect(() => parseJob(value)).toThrow(message);
  });

  it('checks every job of a list, and the list itself', () => {
    expect(parseJobList({ jobs: [JOB] }).jobs[0].id).toBe(JOB.id);
    expect(() => parseJobList({ jobs: {} })).toThrow('"jobs" is not a list');
    expect(() => parseJobList({ jobs: [JOB, { id: 'x' }] })).toThrow(
      '"status"'
    );
  });
});

describe('parseNotebookInfo', () => {
  const info = {
    path: 'nb.ipynb',
    pipeline: 'nb',
    model: 'nb',
    steps: [{ name: 'train', after: [] }],
    parameters: [
      {
        name: 'C',
        type: 'float',
        declared_type: 'float',
        default: 1,
        nullable: false
      },
      { name: 'seed', type: 'int' }
    ],
    champion: null,
    gates: [],
    runs: [],
    ui_url: 'http://127.0.0.1:5000',
    warnings: ['gates: bad spec']
  };

  it('keeps the parameter schema and fills what a parameter may omit', () => {
    const parsed = parseNotebookInfo(info);
    expect(parsed.parameters).toEqual([
      {
        name: 'C',
        type: 'float',
        declared_type: 'float',
        default: 1,
        nullable: false,
        help: null,
        has_default: true,
        computed: null
      },
      {
        name: 'seed',
        type: 'int',
        declared_type: undefined,
        default: null,
        nullable: false,
        help: null,
        has_default: true,
        computed: null
      }
    ]);
    expect(parsed.warnings).toEqual(['gates: bad spec']);
    expect(parsed.config_errors).toEqual([]);
  });

  it('names the parameter that has no name', () => {
    const bad = { ...info, parameters: [info.parameters[0], { type: 'int' }] };
    expect(() => parseNotebookInfo(bad)).toThrow(
      'notebook description, parameter 2: "name" is missing'
    );
  });

  it('needs the pipeline and the target model', () => {
    expect(() => parseNotebookInfo({ ...info, model: null })).toThrow(
      '"model"'
    );
  });
});

describe('history', () => {
  it('reads a reply without entries as an empty journal', () => {
    expect(parseHistory({ model: 'm', champion: null })).toEqual({
      model: 'm',
      champion: null,
      entries: []
    });
  });

  it('shows the newest entries first, at most the limit', () => {
    const history = parseHistory({
      entries: [1, 2, 3, 4].map(n => ({ to_version: n }))
    });
    expect(recentEntries(history, 3).map(e => e.to_version)).toEqual([4, 3, 2]);
    expect(history.entries.map(e => e.to_version)).toEqual([1, 2, 3, 4]);
  });

  it.each([
    [{ version: '3', run_id: 'r' }, '3'],
    ['4', '4'],
    [null, null]
  ])('finds the champion version in %j', (champion, version) => {
    expect(championVersion(champion)).toBe(version);
  });
});

describe('job rules', () => {
  it.each(JOB_STATUSES.map(s => [s, s === 'QUEUED' || s === 'RUNNING']))(
    'counts %s as active: %s',
    (status, active) => {
      expect(isActive(status)).toBe(active);
    }
  );

  it('polls fast only while some job is active', () => {
    expect(anyActive([job('a', 'PROMOTED'), job('b', 'QUEUED')])).toBe(true);
    expect(anyActive([job('a', 'PROMOTED'), job('b', 'FAILED')])).toBe(false);
    expect(anyActive([])).toBe(false);
  });

  it('reports the jobs that finished between two ticks, not new or still running ones', () => {
    const before = [
      job('a', 'RUNNING'),
      job('b', 'RUNNING'),
      job('c', 'SUCCEEDED')
    ];
    const after = [
      job('new', 'QUEUED'),
      job('a', 'BLOCKED'),
      job('b', 'RUNNING'),
      job('c', 'SUCCEEDED')
    ];
    expect(justFinished(before, after)).toEqual(['a']);
    expect(justFinished([], after)).toEqual([]);
  });

  it('fetches details for active jobs and the newest one', () => {
    const jobs = [
      job('newest', 'FAILED'),
      job('b', 'RUNNING'),
      job('c', 'PROMOTED')
    ];
    expect([...needsDetail(jobs)].sort()).toEqual(['b', 'newest']);
    expect(needsDetail([]).size).toBe(0);
  });

  it.each([
    [{ verdict: 'SKIP' }, 'SKIP'],
    [{ verdict: 'FAIL', passed: true }, 'FAIL'],
    [{ passed: false }, 'FAIL'],
    [{}, 'PASS']
  ])('reads the verdict of %j as %s', (gate, verdict) => {
    expect(gateVerdict(gate)).toBe(verdict);
  });
});

describe('resultLinks', () => {
  const done = parseJob({
    ...JOB,
    links: {
      run: '#/runs/r1',
      model_version: '#/models/m/versions/2',
      evil: 'javascript:alert(1)'
    }
  });

  it('points only into the MLflow UI, whatever the server sent', () => {
    expect(resultLinks(done, 'http://127.0.0.1:5000/')).toEqual([
      { kind: 'run', url: 'http://127.0.0.1:5000/#/runs/r1' },
      {
        kind: 'model_version',
        url: 'http://127.0.0.1:5000/#/models/m/versions/2'
      }
    ]);
  });

  it('has none without a UI address', () => {
    expect(resultLinks(done, '')).toEqual([]);
  });
});

describe('words', () => {
  const marked = markingBundle();

  it.each([...JOB_STATUSES, 'PENDING', 'SKIPPED', 'PASS', 'FAIL', 'SKIP'])(
    'translates the status %s',
    status => {
      expect(statusWord(status, marked)).toBe(`«${status}»`);
      expect(statusWord(status, plain)).toBe(status);
    }
  );

  it('shows a status it does not know as sent', () => {
    expect(statusWord('REVIEWING', marked)).toBe('REVIEWING');
  });

  it('makes a CSS class of any status word', () => {
    expect(statusClass('PROMOTED')).toBe('promoted');
    expect(statusClass('Odd status!')).toBe('odd-status-');
  });
});

describe('describeError', () => {
  it.each([
    [
      new ApiError('TypeError: Failed to fetch', 0),
      'Cannot reach the Jupyter server: TypeError: Failed to fetch'
    ],
    [new ApiError("unknown parameter 'x'", 400), "unknown parameter 'x'"],
    [
      new ShapeError('job', '"id" is missing'),
      'The server sent an unexpected job ("id" is missing): is the nb_mlops server extension the same version as this page?'
    ],
    [new Error('boom'), 'boom'],
    ['plain text', 'plain text']
  ])('says %p as one line', (error, line) => {
    expect(describeError(error, plain)).toBe(line);
  });
});
