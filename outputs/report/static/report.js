// Filter boxes over tables, and a "suspects only" switch for documents. Nothing else runs.
(function(){
  document.querySelectorAll('input[data-filter]').forEach(function(box){
    box.addEventListener('input', function(){
      var q = box.value.toLowerCase();
      var rows = document.querySelectorAll(box.getAttribute('data-filter'));
      var shown = 0;
      rows.forEach(function(row){
        var hit = !q || row.textContent.toLowerCase().indexOf(q) >= 0;
        row.hidden = !hit; if (hit) shown++;
      });
      var out = document.getElementById(box.getAttribute('data-count'));
      if (out) out.textContent = shown + ' shown';
    });
  });
  var only = document.getElementById('suspects-only');
  if (only) only.addEventListener('change', function(){
    document.querySelectorAll('article.doc').forEach(function(a){
      a.hidden = only.checked && !a.classList.contains('suspect');
    });
  });
  document.documentElement.setAttribute('data-script', 'ran');
})();
