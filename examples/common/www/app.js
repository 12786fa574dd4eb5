// Fetch a JSON file from the device and show it.
fetch("/data.json")
  .then((r) => r.json())
  .then((d) => {
    document.getElementById("status").textContent =
      `${d.name}: ${d.files} files served from flash`;
  })
  .catch((e) => {
    document.getElementById("status").textContent = `error: ${e}`;
  });
