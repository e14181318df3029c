"""The MNIST subset bundled with the toolkit (mnist_demo.npz) and the script that makes it."""
