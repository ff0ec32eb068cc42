/* secured-activation page snippet: wraps the tag's iAdvize.activate with a flow id.
 *
 *   <script src="/activation/snippet.js"></script>
 *   SecuredActivation.activate().then(result => ...)   // on every page load
 *
 * One flow id per activate call goes with every token request and the report,
 * so the server tells the tag's own retries (same flow) from another tab (another
 * flow). The server's answer is applied: a token -> the tag activates with it;
 * the anonymous option -> the tag activates anonymously; "activate": false -> the
 * tag is not activated at all; 409 -> another tab is logging in, nothing is done.
 * The report carries the tag's callback object without the token.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var base = new URL(".", script && script.src ? script.src : location.origin + "/activation/");

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
    return { status: response.status, data: data };
  }

  function tag() {
    return new Promise(function (resolve) {
      (window.iAdvizeInterface = window.iAdvizeInterface || []).push(resolve);
    });
  }

  function withoutToken(activation) {
    var auth = (activation && activation.authentication) || {};
    var option = auth.option || {};
    var safe = { option: { type: option.type }, status: auth.status };
    if (auth.reason !== undefined) { safe.reason = auth.reason; }
    return { authentication: safe };
  }

  async function activate() {
    var flow = flowId();
    var first = await call("token", "POST", { flow: flow });
    if (first.status === 409) {
      return { outcome: "refused", reason: first.data.reason, flow: flow };
    }
    if (first.status === 429) {  // the visitor's minting budget is spent: nothing was minted
      return { outcome: "not-activated", reason: first.data.reason, flow: flow };
    }
    if (first.status !== 200) {
      return { outcome: "error", reason: first.data.error || "HTTP " + first.status, flow: flow };
    }
    if (!first.data.authenticationOption) {
      return { outcome: "not-activated", reason: first.data.reason, flow: flow };
    }
    var iAdvize = await tag();
    var pending = first.data;
    var provider = async function () {
      if (pending) { var answer = pending; pending = null; return answer; }
      var next = await call("token", "POST", { flow: flow });  // the tag's retry, or a refresh
      if (next.status === 200 && next.data.authenticationOption) { return next.data; }
      throw new Error(next.data.reason || next.data.error || "no token");
    };
    var activation = await iAdvize.activate(provider);
    var report = await call("report", "POST", { flow: flow, activation: withoutToken(activation) });
    if (report.status === 200 && report.data.next) {  // the policy falls back: anonymous
      var option = report.data.next;
      activation = await iAdvize.activate(async function () { return { authenticationOption: option }; });
      report = await call("report", "POST", { flow: flow, activation: withoutToken(activation) });
    }
    return {
      outcome: "activated",
      state: report.data.state,
      activation: withoutToken(activation),
      flow: flow,
    };
  }

  async function logout() {
    var iAdvize = await tag();
    if (iAdvize.logout) { await iAdvize.logout(); }
    return (await call("logout", "POST", {})).data;
  }

  async function state() {
    return (await call("state", "GET")).data;
  }

  window.SecuredActivation = { activate: activate, logout: logout, state: state };
})();
