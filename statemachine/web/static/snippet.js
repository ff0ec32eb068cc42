/* secured-activation page snippet: wraps the tag's iAdvize.activate with a flow id.
 *
 *   <script src="/activation/snippet.js"></script>
 *   SecuredActivation.activate().then(result => ...)          // on every page load
 *   SecuredActivation.activate({ boxed: "iAdvizeFrameId" })    // the tag boxed in an iframe
 *
 * One flow id per activate call goes with every token request and the report,
 * so the server tells the tag's own retries (same flow) from another tab (another
 * flow). The server's answer is applied: a token -> the tag activates with it;
 * the anonymous option -> the tag activates anonymously; "activate": false -> the
 * tag is not activated at all; 409 -> another tab is logging in: this tab waits for
 * that flow to end (a message from the other tab of this browser, or a bounded poll
 * of the state endpoint) and then follows its outcome, without a second login.
 * The report carries the tag's callback object without the token.
 *
 * Every call resolves to {outcome, state, reason?, signedIn, flow}, where
 * outcome is "activated" (the tag is activated: see state), "not-activated" (the
 * policy refused, nobody is signed in, or the other tab's flow failed), "failed" (the
 * tag's activation failed and nothing else was tried) or "error" (HTTP, or a bound
 * was reached). No token is ever in it.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var base = new URL(".", script && script.src ? script.src : location.origin + "/activation/");
  var SECURED = "SECURED_AUTHENTICATION", ANONYMOUS = "ANONYMOUS_AUTHENTICATION";
  var IN_FLIGHT = ["fetching_token", "activating", "retrying", "activating_anonymous"];
  var CHANNEL = "secured-activation:" + base.pathname;
  var WAIT_MS = 20000;        // how long a refused tab waits for the other tab's flow
  var ROUNDS = 3;             // how many times a refused tab asks again, at most
  var POLL_MS = [250, 500, 1000, 1000, 2000];  // the state endpoint, when no tab tells us
  var BOXED_MS = 60000;       // how long the boxed tag may take to answer

  function flowId() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return btoa(String.fromCharCode.apply(null, bytes))
      .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  async function call(path, method, body) {
    var response = await fetch(new URL(path, base), {
      method: method,
      credentials: "same-origin",
      cache: "no-store",
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    var data = {};
    try { data = await response.json(); } catch (ignored) { data = {}; }
    return { status: response.status, data: data || {} };
  }

  function tag() {
    return new Promise(function (resolve) {
      (window.iAdvizeInterface = window.iAdvizeInterface || []).push(resolve);
    });
  }

  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  function withoutToken(activation) {
    var auth = (activation && activation.authentication) || {};
    var option = auth.option || {};
    var safe = { option: { type: option.type }, status: auth.status };
    if (auth.reason !== undefined) { safe.reason = String(auth.reason); }
    return { authentication: safe };
  }

  // -- telling the other tabs of this browser that a flow ended ------------------------
  var channel = typeof BroadcastChannel === "function" ? new BroadcastChannel(CHANNEL) : null;
  var listeners = [];
  function heard(message) { listeners.slice().forEach(function (fn) { fn(message); }); }
  if (channel) { channel.onmessage = function (event) { heard(event.data); }; }
  window.addEventListener("storage", function (event) {
    if (event.key === CHANNEL && event.newValue) {
      try { heard(JSON.parse(event.newValue)); } catch (ignored) { /* not ours */ }
    }
  });
  function announce(state) {
    var message = { ended: true, state: state, at: Date.now() + Math.random() };
    if (channel) { channel.postMessage(message); }
    try { localStorage.setItem(CHANNEL, JSON.stringify(message)); } catch (ignored) { /* off */ }
  }

  // Resolves with the state once no flow is in flight, or null when the wait is over.
  async function flowEnded(deadline) {
    var woken = null;
    var wake = function () { if (woken) { woken(); } };
    listeners.push(wake);
    try {
      for (var poll = 0; Date.now() < deadline; poll++) {
        var seen = await call("state", "GET");
        if (seen.status === 200 && IN_FLIGHT.indexOf(seen.data.state) < 0) { return seen.data; }
        var pause = Math.min(POLL_MS[Math.min(poll, POLL_MS.length - 1)], deadline - Date.now());
        await new Promise(function (resolve) { woken = resolve; setTimeout(resolve, pause); });
        woken = null;
      }
      return null;
    } finally {
      listeners.splice(listeners.indexOf(wake), 1);
    }
  }

  function summary(outcome, state, reason, extra) {
    var result = { outcome: outcome, state: state || null };
    if (reason) { result.reason = reason; }
    Object.keys(extra || {}).forEach(function (key) { result[key] = extra[key]; });
    return result;
  }

  // -- the tag, on this page or boxed in an iframe --------------------------------------
  function pageTag() {
    return {
      activate: async function (first, next, anonymousOption) {
        var iAdvize = await tag();
        if (anonymousOption) {
          return iAdvize.activate(async function () { return { authenticationOption: anonymousOption }; });
        }
        var pending = first;
        return iAdvize.activate(async function () {
          if (pending) { var answer = pending; pending = null; return answer; }
          var again = await next();  // the tag's retry, or a refresh
          if (again) { return again; }
          throw new Error("no token");
        });
      },
      logout: async function () {
        var iAdvize = await tag();
        if (iAdvize.logout) { await iAdvize.logout(); }
      },
    };
  }

  var loadedFrames = typeof WeakSet === "function" ? new WeakSet() : null;
  document.addEventListener("load", function (event) {
    if (loadedFrames && event.target && event.target.tagName === "IFRAME") { loadedFrames.add(event.target); }
  }, true);

  function boxedTag(frameId) {
    var frame = document.getElementById(frameId);
    if (!frame || frame.tagName !== "IFRAME") {
      throw new Error("boxed: no iframe with the id " + JSON.stringify(String(frameId)));
    }
    var origin = new URL(frame.getAttribute("src") || "about:blank", location.href).origin;
    if (!origin || origin === "null") {
      throw new Error("boxed: the iframe needs an http(s) src, so its origin can be checked");
    }
    function post(message) {
      if (frame.contentWindow) { frame.contentWindow.postMessage(message, origin); }  // never "*"
    }
    function loaded() {
      if (loadedFrames && loadedFrames.has(frame)) { return Promise.resolve(); }
      return new Promise(function (resolve) {
        frame.addEventListener("load", function () { resolve(); }, { once: true });
        setTimeout(resolve, 10000);  // loaded before this snippet could see it
      });
    }
    // Messages from that iframe's window and origin only: any other frame is ignored.
    function fromFrame(event) {
      return event.source === frame.contentWindow && event.origin === origin &&
        event.data && typeof event.data === "object" && event.data.command === "internals";
    }
    function exchange(request, answer) {
      return new Promise(function (resolve, reject) {
        var timer = setTimeout(function () { done(); reject(new Error("boxed: no answer")); }, BOXED_MS);
        function done() { clearTimeout(timer); window.removeEventListener("message", onMessage); }
        function onMessage(event) {
          if (!fromFrame(event)) { return; }
          if (event.data.method === "get-activate-auth-token" && answer) {
            answer().then(function (token) {
              post({ command: "internals", method: "set-activate-auth-token", args: token });
            });
          } else if (event.data.method === request.method) {
            done();
            resolve(event.data);
          }
        }
        window.addEventListener("message", onMessage);
        loaded().then(function () { post(request); });
      });
    }
    return {
      activate: async function (first, next, anonymousOption) {
        var pending = first;
        var type = anonymousOption ? ANONYMOUS : first.authenticationOption.type;
        var answer = type !== SECURED ? null : async function () {
          var found = pending || await next();
          pending = null;
          var option = found && found.authenticationOption;
          // Past the budget the server gives no token: an empty one is a failed attempt.
          return option && option.type === SECURED && option.token ? option.token : "";
        };
        var reply = await exchange(
          { command: "internals", method: "activate", args: { authenticationOption: { type: type } } },
          answer);
        return reply.activation;
      },
      logout: async function () {
        await exchange({ command: "internals", method: "logout" }, null).catch(function () {});
      },
    };
  }

  // -- one activation ------------------------------------------------------------------
  async function once(flow, driver) {
    var first = await call("token", "POST", { flow: flow });
    var signedIn = first.data.signedIn !== false;
    if (first.status === 409) { return { refused: first.data }; }
    if (first.status === 429) {  // the visitor's minting budget is spent: nothing was minted
      return summary("not-activated", null, first.data.reason, { signedIn: signedIn });
    }
    if (first.status !== 200) {
      return summary("error", null, first.data.reason || first.data.error || "HTTP " + first.status,
        { signedIn: signedIn });
    }
    if (!first.data.authenticationOption) {
      var refusedState = (await call("state", "GET")).data.state || null;
      announce(refusedState);
      return summary("not-activated", refusedState, first.data.reason, { signedIn: signedIn });
    }
    var next = async function () {
      var again = await call("token", "POST", { flow: flow });
      return again.status === 200 && again.data.authenticationOption ? again.data : null;
    };
    var option = first.data.authenticationOption;
    var activation = option.type === SECURED
      ? await driver.activate(first.data, next, null)
      : await driver.activate(null, null, option);
    var report = await call("report", "POST", { flow: flow, activation: withoutToken(activation) });
    if (report.status === 200 && report.data.next) {  // the policy falls back: anonymous
      activation = await driver.activate(null, null, report.data.next);
      report = await call("report", "POST", { flow: flow, activation: withoutToken(activation) });
    }
    var state = report.data.state || null;
    announce(state);
    var auth = withoutToken(activation).authentication;
    var activated = auth.status === "authentication-success";
    return summary(activated ? "activated" : "failed", state,
      activated ? null : (report.data.reason || auth.reason),
      { signedIn: signedIn, option: auth.option.type });
  }

  // The other tab's flow ended: follow its outcome in this tab, never log in a second time.
  async function follow(ended, flow, driver) {
    if (ended.state === "authenticated") {
      // A token request while authenticated is a refresh: this tab's tag gets a fresh token.
      var fresh = await call("token", "POST", { flow: flow });
      if (fresh.status === 200 && fresh.data.authenticationOption &&
          fresh.data.authenticationOption.type === SECURED) {
        var activation = await driver.activate(fresh.data, async function () {
          var again = await call("token", "POST", { flow: flow });
          return again.status === 200 && again.data.authenticationOption ? again.data : null;
        }, null);
        var auth = withoutToken(activation).authentication;
        var ok = auth.status === "authentication-success";
        return summary(ok ? "activated" : "failed", ok ? "authenticated" : ended.state,
          ok ? null : auth.reason, { signedIn: true, option: SECURED, waited: true });
      }
      return null;  // logged out or expired meanwhile: ask again
    }
    if (ended.state === "anonymous") {
      var anonymous = await driver.activate(null, null, { type: ANONYMOUS });
      var result = withoutToken(anonymous).authentication;
      return summary(result.status === "authentication-success" ? "activated" : "failed",
        "anonymous", result.reason, { option: ANONYMOUS, waited: true });
    }
    if (ended.state === "blocked") {  // the other tab's login failed: do not try it again
      return summary("not-activated", "blocked", ended.reason, { waited: true });
    }
    return null;  // unauthenticated: the other flow was let go; this tab may start its own
  }

  async function activate(options) {
    options = options || {};
    var driver = options.boxed ? boxedTag(options.boxed) : pageTag();
    var deadline = Date.now() + (options.waitMs || WAIT_MS);
    var flow = flowId();
    for (var round = 0; round < ROUNDS; round++) {
      var result = await once(flow, driver);
      if (!result.refused) { result.flow = flow; return result; }
      // Another tab (or device) is logging in: wait for its flow to end, then follow it.
      var ended = await flowEnded(deadline);
      if (ended === null) { break; }
      var followed = await follow(ended, flow, driver);
      if (followed) { followed.flow = flow; return followed; }
      flow = flowId();  // that flow is over: this page load's next request is a new flow
    }
    return summary("error", null, "A login is already ongoing", { flow: flow, waited: true });
  }

  async function logout(options) {
    options = options || {};
    var driver = options.boxed ? boxedTag(options.boxed) : pageTag();
    await driver.logout();
    var done = (await call("logout", "POST", {})).data;
    announce("unauthenticated");
    return done;
  }

  async function state() {
    return (await call("state", "GET")).data;
  }

  window.SecuredActivation = { activate: activate, logout: logout, state: state };
})();
