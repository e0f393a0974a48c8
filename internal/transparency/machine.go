package transparency

// MachineCase is a notebook that depends on the machine it runs on: files
// next to it (Files, written into its folder on the laptop before it
// runs), the working directory, environment variables, process settings,
// side effects. Against a cloud that is another machine (its own disk,
// user, environment), each must still give the outputs of an all-local
// run. "{COUNTER}" in a cell is replaced by the URL of a service that
// counts the requests it gets, reachable from both machines.
type MachineCase struct {
	Name  string
	Files map[string]string
	Cells []string
	// Counted is how many times the user's cells hit the counter: a
	// hidden re-run of a cell with a side effect would hit it again.
	Counted int
	// Expect are texts the all-local outputs must hold, so the case
	// checks what it means to (a setting that took effect, a file read).
	Expect []string
}

// MachineCases are the scenarios of "the cloud is another machine".
var MachineCases = []MachineCase{
	{Name: "files_both_ways", Files: map[string]string{"data/f1.csv": "a,b\n1,2\n", "data/f2.csv": "a,b\n2,4\n", "data/f3.csv": "a,b\n3,6\n"},
		Expect: []string{"['data/f1.csv', 'data/f2.csv', 'data/f3.csv']", "1,2,2,4,3,6", "False 3"},
		Cells: []string{
			"import glob, os\nprint(sorted(glob.glob('data/*.csv')))",
			"rows = []\nfor p in sorted(glob.glob('data/*.csv')):\n    with open(p) as f:\n        rows += f.read().split()[1:]\nprint(rows)",
			"with open('out.txt', 'w') as f:\n    f.write(','.join(rows))\nprint(os.path.exists('out.txt'))",
			"with open('out.txt') as f:\n    print(f.read())",
			"os.remove('out.txt')\nprint(sorted(os.listdir('.')))",
			"print(os.path.exists('out.txt'), len(os.listdir('data')))",
		}},
	{Name: "numpy_files", Files: map[string]string{"arr.txt": "1 2 3\n4 5 6\n"},
		Expect: []string{"21.0", "[[2.0, 4.0, 6.0], [8.0, 10.0, 12.0]]", "42.0"},
		Cells: []string{
			"import numpy as np\na = np.loadtxt('arr.txt')\nprint(a.sum())",
			"np.save('a2.npy', a * 2)",
			"b = np.load('a2.npy')\nprint(b.tolist())",
			"print(np.load('a2.npy').sum())",
		}},
	{Name: "local_module", Files: map[string]string{"mymod.py": "VALUE = 41\n\ndef inc(x):\n    return x + 1\n", "pkg/__init__.py": "from .part import twice\n", "pkg/part.py": "def twice(x):\n    return 2 * x\n"},
		Expect: []string{"42", "41 82", "100"},
		Cells: []string{
			"import mymod\nprint(mymod.inc(mymod.VALUE))",
			"from pkg import twice\nprint(twice(21))",
			"print(mymod.VALUE, twice(mymod.VALUE))",
			"mymod.VALUE = 99",
			"print(mymod.inc(mymod.VALUE))",
		}},
	{Name: "working_directory", Files: map[string]string{"data/x.txt": "in data\n", "top.txt": "at top\n"},
		Expect: []string{"data ['x.txt']", "in data", "at top True"},
		Cells: []string{
			"import os\n%cd -q data",
			"print(os.path.basename(os.getcwd()), sorted(os.listdir('.')))",
			"print(open('x.txt').read().strip())",
			"%cd -q ..",
			"print(open('top.txt').read().strip(), os.path.basename(os.getcwd()) != 'data')",
		}},
	{Name: "environment", Expect: []string{"stdout: on", "2 on", "False 2"},
		Cells: []string{
			"import os\nos.environ['FERRY_CASE_FLAG'] = 'on'",
			"print(os.environ.get('FERRY_CASE_FLAG'))",
			"%env FERRY_CASE_OTHER=2",
			"print(os.environ['FERRY_CASE_OTHER'], os.getenv('FERRY_CASE_FLAG'))",
			"del os.environ['FERRY_CASE_FLAG']",
			"print('FERRY_CASE_FLAG' in os.environ, os.environ.get('FERRY_CASE_OTHER'))",
		}},
	{Name: "process_settings", Expect: []string{"3.142", "[1.23 2.5 ]", "[10 rows x 1 columns]", "LOG INFO hello", "HELLO MAGIC"},
		Cells: []string{
			"import numpy as np, pandas as pd, logging, warnings\n%precision 3",
			"3.14159265",
			"np.set_printoptions(precision=2)\npd.set_option('display.max_rows', 4)",
			"print(np.array([1.23456, 2.5]))\nprint(pd.DataFrame({'x': range(10)}))",
			"logging.basicConfig(level=logging.INFO, format='LOG %(levelname)s %(message)s', force=True)\nwarnings.filterwarnings('ignore', message='quiet')",
			"logging.info('hello')\nwarnings.warn('quiet please')\nprint('after')",
			"from IPython.core.magic import register_cell_magic\n@register_cell_magic\ndef shout(line, cell):\n    print(cell.upper())",
			"%%shout\nhello magic",
		}},
	{Name: "matplotlib_settings", Expect: []string{"3.5 #E5E5E5", "3.5"},
		Cells: []string{
			"import matplotlib.pyplot as plt\nplt.style.use('ggplot')\nplt.rcParams['lines.linewidth'] = 3.5",
			"print(plt.rcParams['lines.linewidth'], plt.rcParams['axes.facecolor'])",
			"fig, ax = plt.subplots()\nline, = ax.plot([0, 1], [0, 1])\nw = line.get_linewidth()\nplt.close(fig)",
			"print(w)",
		}},
	{Name: "pandas_frames_print_whole", Expect: []string{"a  b  c  d  e  f  g  h  i  j  k  l  m  n  o  p"},
		Cells: []string{
			"import pandas as pd\ndf = pd.DataFrame({c: range(3) for c in 'abcdefghijklmnop'})",
			"print(df)",
			"df2 = df * 2",
			"print(df2)",
		}},
	{Name: "side_effects_run_once", Counted: 3, Expect: []string{"1 200000", "200002", "3 1"},
		Cells: []string{
			"import urllib.request\ndef hit():\n    return int(urllib.request.urlopen('{COUNTER}').read())",
			"x = hit()\nbig = list(range(200000))",
			"print(x, len(big))",
			"y = hit() + len(big)",
			"print(y)",
			"print(hit(), x)",
		}},
	{Name: "own_temp_file", Expect: []string{"kept and more"},
		Cells: []string{
			"import tempfile, os\npath = os.path.join(tempfile.mkdtemp(), 'own.txt')\nwith open(path, 'w') as f:\n    f.write('kept')",
			"print(open(path).read())",
			"with open(path, 'a') as f:\n    f.write(' and more')",
			"print(open(path).read())",
		}},
}
