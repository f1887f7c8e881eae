/**
 * The monitoring reply (`GET models/{name}/monitor`): the champion's latest verdict and the
 * drift history, checked before anyone reads it; the chart's geometry (drifted-feature share
 * per check) and the rules read off the history (which verdicts are new, is a snapshot
 * reference well formed).
 */
import type { TranslationBundle } from '@jupyterlab/translation';

import { ShapeError } from './models';

/** One act of a check's policy, with its outcome. */
export interface IMonitorAction {
  name: string;
  status: string;
  detail: string;
  run_id: string | null;
  version: string | null;
  event: string | null;
}

/** One check of the monitoring journal. */
export interface IMonitorCheck {
  id: string;
  at: string;
  version: string | null;
  /** ok | drift | decay */
  verdict: string;
  data: string | null;
  reference: string | null;
  /** The share of compared features that drifted, 0..1 (0 when not recorded). */
  share: number;
  drifted: string[];
  decay: { worst: number | null; decayed: boolean } | null;
  actions: IMonitorAction[];
}

/** GET /nb-mlops/api/models/{name}/monitor */
export interface IMonitorView {
  model: string;
  champion: { version: string; run_id: string | null } | null;
  /** The champion's latest check, or null when it has none. */
  latest: IMonitorCheck | null;
  /** Every check, oldest first. */
  checks: IMonitorCheck[];
}

/** A point of the drift chart. */
export interface IChartPoint {
  x: number;
  y: number;
  check: IMonitorCheck;
}

/** The drift chart: its points, the polyline through them and the box they fit in. */
export interface IChartGeometry {
  width: number;
  height: number;
  points: IChartPoint[];
  /** The SVG path data of the line (empty without points). */
  path: string;
}

/** NAME@vN, as the retrain route takes it. */
export const SNAPSHOT_REF = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}@v[0-9]{1,9}$/;

type JSONObject = { [key: string]: unknown };

function isObject(value: unknown): value is JSONObject {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function text(value: unknown): string | null {
  if (typeof value === 'string') {
    return value;
  }
  return typeof value === 'number' ? String(value) : null;
}

function share(value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    return 0;
  }
  return Math.min(1, Math.max(0, value));
}

function parseAction(data: JSONObject): IMonitorAction {
  return {
    name: text(data.name) ?? '',
    status: text(data.status) ?? '',
    detail: text(data.detail) ?? '',
    run_id: text(data.run_id),
    version: text(data.version),
    event: text(data.event)
  };
}

/** One check, or null when it has no id or verdict (a torn or foreign record). */
export function parseCheck(value: unknown): IMonitorCheck | null {
  if (!isObject(value)) {
    return null;
  }
  const id = text(value.id);
  const verdict = text(value.verdict);
  if (!id || !verdict) {
    return null;
  }
  const decay = isObject(value.decay)
    ? {
        worst: typeof value.decay.worst === 'number' ? value.decay.worst : null,
        decayed: value.decay.decayed === true
      }
    : null;
  return {
    id,
    at: text(value.at) ?? '',
    version: text(value.version),
    verdict,
    data: text(value.data),
    reference: text(value.reference),
    share: share(value.share),
    drifted: Array.isArray(value.drifted) ? value.drifted.map(String) : [],
    decay,
    actions: (Array.isArray(value.actions) ? value.actions : [])
      .filter(isObject)
      .map(parseAction)
  };
}

/**
 * Check the monitoring reply; checks without an id or verdict are left out.
 *
 * @throws ShapeError when the reply is not an object or `checks` is not a list.
 */
export function parseMonitor(value: unknown): IMonitorView {
  const what = 'monitoring history';
  if (!isObject(value)) {
    throw new ShapeError(what, 'not a JSON object');
  }
  if (!Array.isArray(value.checks)) {
    throw new ShapeError(what, '"checks" is not a list');
  }
  const checks = value.checks
    .map(parseCheck)
    .filter((c): c is IMonitorCheck => c !== null);
  const champion = isObject(value.champion)
    ? {
        version: text(value.champion.version) ?? '',
        run_id: text(value.champion.run_id)
      }
    : null;
  return {
    model: text(value.model) ?? '',
    champion,
    latest: parseCheck(value.latest),
    checks
  };
}

/**
 * Where each check sits on a `width` × `height` chart: x in check order, evenly spaced, y the
 * drifted share (0 at the bottom, 1 at the top), `pad` pixels kept free on every side.
 */
export function chartGeometry(
  checks: ReadonlyArray<IMonitorCheck>,
  width = 240,
  height = 72,
  pad = 6
): IChartGeometry {
  const inner = { w: width - 2 * pad, h: height - 2 * pad };
  const step = checks.length > 1 ? inner.w / (checks.length - 1) : 0;
  const points = checks.map((check, i) => ({
    x: round(checks.length > 1 ? pad + i * step : width / 2),
    y: round(pad + (1 - check.share) * inner.h),
    check
  }));
  const path = points
    .map((p, i) => `${i === 0 ? 'M' : 'L'}${p.x} ${p.y}`)
    .join(' ');
  return { width, height, points, path };
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

/**
 * The checks of `after` that `before` did not have and whose verdict is not ok (what deserves
 * a notification); none on the first load (`before` null) or for another model.
 */
export function newAlarms(
  before: IMonitorView | null,
  after: IMonitorView
): IMonitorCheck[] {
  if (before === null || before.model !== after.model) {
    return [];
  }
  const known = new Set(before.checks.map(c => c.id));
  return after.checks.filter(c => !known.has(c.id) && c.verdict !== 'ok');
}

/** True for `NAME@vN`. */
export function isSnapshotRef(value: string): boolean {
  return SNAPSHOT_REF.test(value);
}

/** The retraining runs a check's policy started (run ids), in order. */
export function retrainRuns(check: IMonitorCheck): string[] {
  return check.actions
    .filter(a => a.name === 'retrain' && a.run_id)
    .map(a => String(a.run_id));
}

/** The word shown for a check's verdict. */
export function verdictWord(verdict: string, trans: TranslationBundle): string {
  switch (verdict) {
    case 'ok':
      return trans.__('OK');
    case 'drift':
      return trans.__('DRIFT');
    case 'decay':
      return trans.__('DECAY');
    default:
      return verdict;
  }
}
