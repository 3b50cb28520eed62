// Open every image of the page at full size on click: wrap it in a link to its own file.
// (Loaded on every page by Jupyter Book, which adds the _static/*.js files to html_js_files.)
(function () {
  function linkImages() {
    document.querySelectorAll("article.bd-article img, main img").forEach(function (img) {
      if (img.closest("a") || !img.getAttribute("src")) return;
      var a = document.createElement("a");
      a.href = img.getAttribute("src");
      a.className = "ibnb-full-size";
      a.title = "Open the image at full size";
      img.parentNode.insertBefore(a, img);
      a.appendChild(img);
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", linkImages);
  else linkImages();
})();
