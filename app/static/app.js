// Microblog's enhancements. Every page works without this file: dates are then shown
// in UTC, and the post box says its limit (and the browser keeps to it).
(function () {
  'use strict';

  var UNITS = [
    ['year', 365 * 24 * 3600],
    ['month', 30 * 24 * 3600],
    ['week', 7 * 24 * 3600],
    ['day', 24 * 3600],
    ['hour', 3600],
    ['minute', 60]
  ];
  // In the page's language (<html lang>); the words the page gives are already in it.
  var lang = document.documentElement.lang || 'en';
  var words = window.Intl && Intl.RelativeTimeFormat
    ? new Intl.RelativeTimeFormat(lang, { numeric: 'auto' })
    : null;

  // "5 minutes ago", "yesterday", "3 weeks ago"; under a minute, "just now".
  function ago(date) {
    var seconds = (date.getTime() - Date.now()) / 1000;
    for (var i = 0; i < UNITS.length; i++) {
      var unit = UNITS[i][0], size = UNITS[i][1];
      if (Math.abs(seconds) >= size) {
        return words.format(Math.round(seconds / size), unit);
      }
    }
    return document.body.getAttribute('data-just-now') || 'just now';
  }

  // <time datetime="..." data-relative>: the relative time, the exact one on hover.
  function showRelativeTimes() {
    var times = document.querySelectorAll('time[datetime][data-relative]');
    for (var i = 0; i < times.length; i++) {
      var time = times[i];
      var date = new Date(time.getAttribute('datetime'));
      if (isNaN(date.getTime())) continue;
      if (!time.title) {
        time.title = date.toLocaleString(lang);
        time.setAttribute('data-utc', time.textContent);
      }
      time.textContent = ago(date);
    }
  }

  // A field with data-counter="<id>" and a maxlength: the element <id> counts down.
  function startCounters() {
    var fields = document.querySelectorAll('[data-counter][maxlength]');
    for (var i = 0; i < fields.length; i++) {
      (function (field) {
        var counter = document.getElementById(field.getAttribute('data-counter'));
        var limit = parseInt(field.getAttribute('maxlength'), 10);
        if (!counter || !limit) return;
        function update() {
          var left = limit - field.value.length;
          // The page gives both sentences in its language: "1 character left", "{} characters left".
          var one = counter.getAttribute('data-one-left') || '1 character left';
          var many = counter.getAttribute('data-many-left') || '{} characters left';
          counter.textContent = left === 1 ? one : many.replace('{}', left);
          counter.classList.toggle('counter-low', left <= 10);
        }
        field.addEventListener('input', update);
        update();
      })(fields[i]);
    }
  }

  document.addEventListener('DOMContentLoaded', function () {
    if (words) {
      showRelativeTimes();
      window.setInterval(showRelativeTimes, 60 * 1000);
    }
    startCounters();
  });
})();
