// The view buttons: show one flamegraph, hide the others (see page.css for
// why hidden ones keep their width).
document.querySelectorAll("#views button").forEach(function (button) {
  button.addEventListener("click", function () {
    var view = button.dataset.view;
    document.querySelectorAll("#views button").forEach(function (other) {
      other.setAttribute("aria-pressed", String(other === button));
    });
    document.querySelectorAll(".flame").forEach(function (flame) {
      flame.classList.toggle("off", flame.id !== "flame-" + view);
    });
  });
});
