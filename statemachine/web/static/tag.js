/* A stand-in for the iAdvize tag, for the reference host only: the tag's activate/logout API,
 * its callback object, its 3 retries; it activates against the local platform endpoint,
 * which runs LocalActivator. */
(function () {
  "use strict";
  var SECURED = "SECURED_AUTHENTICATION", ANONYMOUS = "ANONYMOUS_AUTHENTICATION";
  var RETRIES = 3;

  function failure(option, reason) {
    return { authentication: { option: option, status: "authentication-failure", reason: reason } };
  }

  var iAdvize = {
    activated: null,
    ongoing: false,
    calls: 0,
    activate: async function (provider) {
      this.calls += 1;
      if (this.ongoing) { return failure({ type: SECURED }, "A login is already ongoing"); }
      if (this.activated) {
        return failure({ type: SECURED }, "Can't activate twice, please logout first");
      }
      this.ongoing = true;
      var last = { type: SECURED };
      var reason = "Failed to fetch authentication with a server error";
      try {
        for (var attempt = 0; attempt <= RETRIES; attempt++) {
          var option;
          try {
            var answer = await provider();
            option = answer && answer.authenticationOption;
          } catch (error) {
            reason = "Failed to fetch authentication with a server error";
            continue;
          }
          if (!option || (option.type !== SECURED && option.type !== ANONYMOUS)) {
            reason = "A valid authentication option must be provided";
            continue;
          }
          last = option;
          var response = await fetch("/platform/activate", {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ authenticationOption: option }),
          });
          var body = await response.json();
          var auth = body.authentication || {};
          if (auth.status === "authentication-success") {
            this.activated = option.type;
            return { authentication: { option: option, status: "authentication-success" } };
          }
          reason = auth.reason || reason;
        }
        return failure(last, reason);
      } finally {
        this.ongoing = false;
      }
    },
    logout: async function () { this.activated = null; },
  };

  var queued = window.iAdvizeInterface || [];
  window.iAdvizeInterface = {
    push: function (callback) { Promise.resolve().then(function () { callback(iAdvize); }); return 1; },
  };
  queued.forEach(function (callback) { window.iAdvizeInterface.push(callback); });
  window.iAdvize = iAdvize;
})();
