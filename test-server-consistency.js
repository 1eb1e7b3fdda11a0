// test-server-consistency.js — the prepared console check of comfyui.js's server lock.
//
// Run it in DevTools on a page that uses comfyui.js (dist/ serves it at its root, the npm
// package ships it at its root):
//
//   fetch('/test-server-consistency.js').then(r => r.text()).then(eval)
//
// It runs the old module's four console steps (debugWebSocketLock, validateServerConsistency,
// getApiBaseUrl five times, checkServerUnlockCondition) and the consistency self test (one
// tiny model-free job per server), then prints a pass/fail table (console.table) and a
// one-line verdict, in Chinese on a page whose language is Chinese, else in English. Its
// value (the promise eval returns) is {ok, initialised, checks: [{check, ok, detail}],
// verdict}. It uses only the window.* helpers comfyui.js sets, so it needs no import and
// works when eval'd; on a page where init() has not succeeded it says what to do and stops.
(async () => {
  const lang = (document.documentElement.lang || navigator.language || "en").toLowerCase();
  const zh = lang.startsWith("zh");
  const say = (en, cn) => (zh ? cn : en);
  const tag = "[comfyui-client check]";

  const stop = (message) => {
    console.warn(`${tag} ${message}`);
    return { ok: false, initialised: false, checks: [], verdict: message };
  };
  if (typeof window.debugWebSocketLock !== "function") {
    return stop(say(
      "comfyui.js is not loaded on this page: import it (import * as comfy from " +
        "\"comfyui-pool-client\"), await comfy.init({servers: [\"http://host:8188\"]}), " +
        "then run this check again",
      "此页面没有加载 comfyui.js：请先导入它（import * as comfy from \"comfyui-pool-client\"），" +
        "执行 await comfy.init({servers: [\"http://host:8188\"]})，然后重新运行此检查"));
  }

  // step 1, as written in the old session: no await
  const lock = window.debugWebSocketLock();
  if (!lock || lock.initialised === false) {
    return stop(say(
      "comfyui.js is loaded but not initialised: await init({servers: [\"http://host:8188\"]}) " +
        "in the page first (or wait for the init() that is running), then run this check again",
      "comfyui.js 已加载但尚未初始化：请先在页面中执行 await init({servers: " +
        "[\"http://host:8188\"]})（或等待正在进行的 init() 完成），然后重新运行此检查"));
  }

  const checks = [];
  const record = (check, ok, detail) => checks.push({ check, ok: Boolean(ok), detail });
  const failure = (e) => `${(e && e.code) || "error"}: ${(e && e.message) || e}`;
  const isThenable = (v) => v != null && typeof v.then === "function";

  const pending = (lock.pendingTasks || []).length;
  record("debugWebSocketLock()", typeof lock === "object" && !isThenable(lock),
         say(`returned at once; ${lock.lockedServer ? `locked to ${lock.lockedServer}`
                                                      : "no server locked"}, WebSocket ` +
               `${lock.wsState}, ${pending} task(s) pending`,
             `立即返回；${lock.lockedServer ? `已锁定 ${lock.lockedServer}` : "未锁定"}，` +
               `WebSocket ${lock.wsState}，${pending} 个任务待完成`));
  const consistency = (v) => say(`${v.checkedJobs} job(s) checked: ${v.reason}`,
                                 v.consistent ? `检查了 ${v.checkedJobs} 个任务，全部一致`
                                   : `检查了 ${v.checkedJobs} 个任务，${v.violations.length} ` +
                                     `处不一致：${v.reason}`);

  // step 2
  try {
    const v = await window.validateServerConsistency();
    record("validateServerConsistency()", v.consistent, consistency(v));
  } catch (e) {
    record("validateServerConsistency()", false, failure(e));
  }

  // step 3: while the lock is held, every call names the locked server
  try {
    const bases = [];
    for (let i = 0; i < 5; i++) bases.push(await window.getApiBaseUrl());
    const distinct = [...new Set(bases)];
    const held = window.debugWebSocketLock({ print: false });
    const locked = held.lock && held.lock.held ? held.lockedServer : null;
    let ok;
    let detail;
    if (locked) {
      ok = distinct.length === 1 && distinct[0] === locked;
      detail = say(`5 calls: ${distinct.join(", ")}; locked server ${locked}`,
                   `5 次调用：${distinct.join("，")}；已锁定 ${locked}`);
    } else {
      ok = distinct.length >= 1;
      detail = say(
        `5 calls: ${distinct.join(", ")}; no lock is held, so each call selects a server ` +
          "(one while the pool's loads stay the same)",
        `5 次调用：${distinct.join("，")}；当前未锁定，每次调用都会重新选择服务器（负载不变时结果相同）`);
    }
    record("getApiBaseUrl() x5", ok, detail);
  } catch (e) {
    record("getApiBaseUrl() x5", false, failure(e));
  }

  // step 4, as written: no await
  const unlock = window.checkServerUnlockCondition();
  record("checkServerUnlockCondition()",
         typeof unlock === "object" && !isThenable(unlock) && typeof unlock.canUnlock === "boolean",
         say(`returned at once; canUnlock ${unlock.canUnlock}: ${unlock.reason}`,
             `立即返回；${unlock.canUnlock ? "可以解锁" : "暂不能解锁"}，` +
               `${unlock.pendingTasks} 个任务待完成`));

  // the self test: one tiny job per server, each checked from the audit trail
  try {
    const t = await window.runConsistencySelfTest();
    const bad = t.servers.filter((s) => !s.ok);
    record("runConsistencySelfTest()", t.ok,
           bad.length
             ? bad.map((s) => `${s.server}: ${s.error ? s.error.message : say(
                 `requests on ${(s.serversSeen || []).join(", ")}`,
                 `请求发往 ${(s.serversSeen || []).join("，")}`)}`).join("; ")
             : say(`${t.servers.length} server(s), each job stayed on its server`,
                   `${t.servers.length} 台服务器，每个任务都留在自己的服务器上`));
  } catch (e) {
    record("runConsistencySelfTest()", false, failure(e));
  }

  // and the audit trail once more, with the self test's jobs in it
  try {
    const v = await window.validateServerConsistency("after the self test");
    record(say("validateServerConsistency() after the self test",
               "自检后的 validateServerConsistency()"), v.consistent, consistency(v));
  } catch (e) {
    record(say("validateServerConsistency() after the self test",
               "自检后的 validateServerConsistency()"), false, failure(e));
  }

  const failed = checks.filter((c) => !c.ok);
  console.table(checks.map((c) => ({
    [say("check", "检查项")]: c.check,
    [say("result", "结果")]: c.ok ? say("PASS", "通过") : say("FAIL", "失败"),
    [say("detail", "说明")]: c.detail,
  })));
  const verdict = failed.length
    ? say(`${tag} FAIL: ${failed.length} of ${checks.length} checks failed (` +
            `${failed.map((c) => c.check).join(", ")})`,
          `${tag} 失败：${checks.length} 项检查中有 ${failed.length} 项失败（` +
            `${failed.map((c) => c.check).join("，")}）`)
    : say(`${tag} PASS: all ${checks.length} checks passed, every request stayed on its server`,
          `${tag} 通过：全部 ${checks.length} 项检查通过，每个请求都留在自己的服务器上`);
  (failed.length ? console.error : console.log)(verdict);
  return { ok: failed.length === 0, initialised: true, checks, verdict };
})();
